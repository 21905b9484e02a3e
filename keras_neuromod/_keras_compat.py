"""Every use of a private Keras or TensorFlow API in keras_neuromod.

Keras 3 keeps its optimizers' update machinery, the dropout mixin of its RNN
cells and the walk over nested layers private. keras_neuromod needs a few of
them; each is used here and nowhere else, so that a Keras release that moves
one breaks one function of this module, and `tests/test_keras_compat.py`
(which checks that every name below exists and that no other module of the
package reaches into Keras or TensorFlow internals) fails loudly instead of the
modulation being silently skipped.

Each function says why the public API does not suffice. All were checked on
Keras 3.10.0 and 3.15.1 (the lowest and newest versions `setup.cfg` allows);
`CHECKED_KERAS_VERSIONS` records that.

The neuromodulated optimizer must also *override* three private hooks of
`keras.optimizers.Optimizer` (`OPTIMIZER_HOOKS`): overriding is the only way
to run the modulation inside each backend's own update path (distribution,
gradient accumulation, EMA). The overrides stay methods of
`NeuromodulatedOptimizer`; the test asserts that Keras still defines them.
"""

import keras

# The private `keras.layers.RNN` recognises a cell with dropout masks by this
# class: it resets the cell's masks between batches only for its subclasses.
# Keras exports no public alias (checked on 3.10.0 and 3.15.1).
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

__all__ = [
    "CHECKED_KERAS_VERSIONS",
    "DropoutRNNCell",
    "OPTIMIZER_HOOKS",
    "OPTIMIZER_MEMBERS",
    "distribution_strategy",
    "flatten_layers",
    "learning_rate_variable",
    "merge_call",
    "tracked_variables",
    "uses_weight_decay",
    "variable_index",
]

CHECKED_KERAS_VERSIONS = ("3.10.0", "3.15.1")

# Private methods of `keras.optimizers.Optimizer` that `NeuromodulatedOptimizer`
# overrides, with why:
OPTIMIZER_HOOKS = {
    # called once per step with every gradient: the modulation runs here, once,
    # before the parent's per-variable updates (every backend)
    "_backend_update_step": "all",
    # TensorFlow's cross-replica update: the modulation reads the all-reduced
    # gradients there
    "_distributed_tf_update_step": "tensorflow",
    # Keras decays weights before the update with one learning rate; the
    # modulated decay needs each tensor's rate, so the hook is disabled and
    # `update_step` decays instead
    "_apply_weight_decay": "all",
}

# Private members of `keras.optimizers.Optimizer` that the functions below read.
OPTIMIZER_MEMBERS = {
    "_get_variable_index": "all",
    "_use_weight_decay": "all",
    "_trainable_variables": "all",
    "_learning_rate": "all",
    "_distribution_strategy": "tensorflow",
}


def variable_index(optimizer, variable):
    """The position of `variable` among the variables `optimizer` was built with.

    Keras keys each variable's slots (Adam's moments, SGD's momentum) by this
    index; the public `optimizer.variables` gives no way to find it.
    """
    return optimizer._get_variable_index(variable)


def uses_weight_decay(optimizer, variable):
    """Whether `exclude_from_weight_decay` leaves `variable` decayed.

    The modulated decay (applied in `update_step`) must honour the exclusions
    the user set; Keras keeps that test private.
    """
    return optimizer._use_weight_decay(variable)


def tracked_variables(optimizer):
    """The model variables `optimizer` was built with, in their order.

    The modulation reads every weight (its magnitude statistics), not only
    those with a gradient in the step's arguments; Keras keeps the list private.
    """
    return optimizer._trainable_variables


def learning_rate_variable(optimizer):
    """The variable (or schedule) behind `optimizer.learning_rate`.

    `reset_state` must leave the learning-rate multiplier alone and so must
    recognise its variable; the public property returns its value.
    """
    return optimizer._learning_rate


def distribution_strategy(optimizer):
    """TensorFlow only: the `tf.distribute` strategy the optimizer was made under.

    Keras's TensorFlow optimizer keeps it private; it says how many replicas
    hold the gradients, and `merge_call` needs it.
    """
    return optimizer._distribution_strategy


def merge_call(function, strategy, *args):
    """TensorFlow only: run `function(strategy, *args)` in cross-replica context.

    This is what Keras's TensorFlow `_backend_update_step` does after
    all-reducing the gradients; the neuromodulated optimizer does the same
    without the all-reduce when there is one replica. TensorFlow exposes it
    only as `tf.__internal__.distribute.interim.maybe_merge_call`.
    """
    import tensorflow as tf

    return tf.__internal__.distribute.interim.maybe_merge_call(function, strategy, *args)


def flatten_layers(layer):
    """`layer` and every layer nested in it, at any depth, each once.

    `Model.layers` lists only a model's own layers, not the sublayers of a
    custom layer (a `FlatSwitchableMLP` inside a model); Keras's own walk
    over every nested layer is private.
    """
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(f"Expected a Keras model or layer, got {type(layer).__name__}.")
    return list(layer._flatten_layers(include_self=True, recursive=True))
