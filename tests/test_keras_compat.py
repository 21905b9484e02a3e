"""The private Keras and TensorFlow APIs keras_neuromod uses, all in `_keras_compat`.

A Keras release that renames one of them fails here, by name, instead of the
modulation being skipped without a word.
"""

import ast
import pathlib

import keras
import numpy as np
import pytest

import keras_neuromod
from keras_neuromod import _keras_compat
from keras_neuromod.layers import PlasticRNNCell
from keras_neuromod.optimizers import NmAdam
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer
from keras_neuromod.switching import FlatSwitchableMLP
from keras_neuromod.switching import SwitchableDense
from keras_neuromod.switching import TaskInput

PACKAGE = pathlib.Path(keras_neuromod.__file__).parent
BACKEND = keras.backend.backend()


def _applies(backends):
    return backends in ("all", BACKEND)


def _built_sgd(**kwargs):
    variables = [
        keras.Variable(np.ones((2, 3), "float32"), name="kernel"),
        keras.Variable(np.zeros((3,), "float32"), name="bias"),
    ]
    optimizer = keras.optimizers.SGD(**kwargs)
    optimizer.build(variables)
    return optimizer, variables


# -- what Keras must still provide -------------------------------------------


@pytest.mark.parametrize("name", sorted(_keras_compat.OPTIMIZER_HOOKS))
def test_the_optimizer_hooks_exist_in_keras_and_are_overridden(name):
    if not _applies(_keras_compat.OPTIMIZER_HOOKS[name]):
        pytest.skip(f"{name} belongs to another backend's optimizer")
    assert callable(getattr(keras.optimizers.Optimizer, name, None)), (
        f"Keras {keras.__version__} no longer has Optimizer.{name}; "
        "NeuromodulatedOptimizer's override would never run."
    )
    assert name in vars(NeuromodulatedOptimizer)


@pytest.mark.parametrize("name", sorted(_keras_compat.OPTIMIZER_MEMBERS))
def test_the_optimizer_members_read_exist_in_keras(name):
    if not _applies(_keras_compat.OPTIMIZER_MEMBERS[name]):
        pytest.skip(f"{name} belongs to another backend's optimizer")
    optimizer, _ = _built_sgd()
    assert hasattr(optimizer, name), f"Keras {keras.__version__} has no Optimizer.{name}"


def test_the_checked_versions_are_those_setup_cfg_allows():
    path = PACKAGE.parent / "setup.cfg"
    if not path.exists():
        pytest.skip("the package is installed outside its repository")
    setup = path.read_text()
    lowest, newest = _keras_compat.CHECKED_KERAS_VERSIONS
    assert f"keras>={lowest.rsplit('.', 1)[0]}" in setup
    newest_minor = int(newest.split(".")[1])
    assert f"<3.{newest_minor + 1}" in setup


# -- each function, on real objects ---------------------------------------------


def test_variable_index_and_tracked_variables():
    optimizer, variables = _built_sgd()
    assert list(_keras_compat.tracked_variables(optimizer)) == variables
    assert [_keras_compat.variable_index(optimizer, v) for v in variables] == [0, 1]


def test_uses_weight_decay_honours_the_exclusions():
    optimizer, (kernel, bias) = _built_sgd(weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    assert _keras_compat.uses_weight_decay(optimizer, kernel)
    assert not _keras_compat.uses_weight_decay(optimizer, bias)


def test_learning_rate_variable_is_the_optimizers_variable():
    optimizer, _ = _built_sgd(learning_rate=0.25)
    variable = _keras_compat.learning_rate_variable(optimizer)
    assert any(variable is v for v in optimizer.variables)
    assert float(keras.ops.convert_to_numpy(variable)) == pytest.approx(0.25)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's distribution API")
def test_merge_call_runs_in_cross_replica_context():
    optimizer, _ = _built_sgd()
    strategy = _keras_compat.distribution_strategy(optimizer)
    assert strategy.num_replicas_in_sync == 1
    seen = []
    _keras_compat.merge_call(lambda s, a, b: seen.append((s, a, b)), strategy, 1, 2)
    assert seen == [(strategy, 1, 2)]


def test_flatten_layers_finds_nested_layers_once():
    inputs = keras.Input((4,))
    task = TaskInput()
    flat = FlatSwitchableMLP([3])
    dense = SwitchableDense(2)
    model = keras.Model(inputs, dense(flat(task(inputs))))
    found = _keras_compat.flatten_layers(model)
    assert found[0] is model
    assert len({id(layer) for layer in found}) == len(found)
    for layer in (task, flat, dense):
        assert any(layer is other for other in found)
    with pytest.raises(ValueError, match="Keras model or layer"):
        _keras_compat.flatten_layers(object())


def test_the_plastic_cells_get_their_dropout_masks_reset_by_keras():
    assert issubclass(keras.layers.SimpleRNNCell, _keras_compat.DropoutRNNCell)
    cell = PlasticRNNCell(3, plasticity="hebbian", dropout=0.5)
    assert isinstance(cell, _keras_compat.DropoutRNNCell)
    layer = keras.layers.RNN(cell)
    x = np.ones((2, 4, 2), "float32")
    layer(x, training=True)
    assert getattr(cell, "_dropout_mask", None) is None  # reset after the call


# -- the public accessors the package uses itself ---------------------------------


def test_the_genome_accessors_match_set_genome():
    optimizer = NmAdam(agent="nm_adam_general")
    assert optimizer.genome_variables() == ()
    assert optimizer.horizon_variable is None
    variables = [keras.Variable(np.ones((2, 3), "float32"))]
    optimizer.build(variables)
    tags, active, rates = optimizer.pack_genome(optimizer.genome)
    assert tags.shape == (3, optimizer.grn_capacity)
    assert active.shape == (optimizer.grn_capacity,)
    for variable, value in zip(optimizer.genome_variables(), (tags, active, rates)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), value)


# -- nothing else reaches into Keras or TensorFlow internals ----------------------

# `NeuromodulatedOptimizer` overrides these (and calls the parent's through super()).
ALLOWED_OVERRIDES = {"optimizers/base.py": set(_keras_compat.OPTIMIZER_HOOKS)}


def _keras_private_names():
    names = set(_keras_compat.OPTIMIZER_MEMBERS) | set(_keras_compat.OPTIMIZER_HOOKS)
    classes = (
        keras.optimizers.Optimizer,
        keras.layers.Layer,
        keras.Model,
        keras.layers.RNN,
        keras.Variable,
    )
    for cls in classes:
        names |= {n for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
    return names


def _private_uses(tree, allowed, private):
    """(line, text) of every import of Keras or TensorFlow internals and every use of a
    private Keras member in `tree`, but overrides (and their super() calls) of `allowed`."""
    found = []
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        for module in modules:
            if module.startswith(("keras.src", "tensorflow.python", "tensorflow.core")):
                found.append((node.lineno, f"import {module}"))
        if isinstance(node, ast.FunctionDef) and node.name in private - allowed:
            found.append((node.lineno, f"def {node.name}"))
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr == "__internal__":
            found.append((node.lineno, ast.unparse(node)))
        elif node.attr in private and not (
            node.attr in allowed and ast.unparse(node.value) in ("self", "super()")
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_the_compat_module_uses_private_keras_or_tensorflow_api():
    private = _keras_private_names()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "_keras_compat.py":
            continue
        allowed = ALLOWED_OVERRIDES.get(relative, set())
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{relative}:{line}: {text}" for line, text in _private_uses(tree, allowed, private)
        ]
    assert not offenders, "private Keras/TensorFlow API outside _keras_compat:\n" + "\n".join(
        offenders
    )


def test_the_scan_catches_what_it_looks_for():
    source = (
        "from keras.src.layers import Dense\n"
        "import tensorflow as tf\n"
        "tf.__internal__.distribute\n"
        "model._flatten_layers()\n"
        "self._backend_update_step\n"
        "def _apply_weight_decay(self): pass\n"
    )
    found = _private_uses(ast.parse(source), {"_backend_update_step"}, _keras_private_names())
    assert sorted(line for line, _ in found) == [1, 3, 4, 6]
