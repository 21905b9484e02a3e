"""The package's modules import one another without a cycle.

The graph is read from the source (every `import` and `from ... import`, at
the top of a module or inside a function: a deferred import is still a
dependency), so no import order can hide a cycle.
"""

import ast
import pathlib

import keras_neuromod

PACKAGE = pathlib.Path(keras_neuromod.__file__).resolve().parent


def _modules():
    """Every module of the package: dotted name -> source path."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(name, path, modules):
    """The package's modules that the module `name` imports."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            # `from a import b` imports the module a.b when there is one, else a
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                break
    return found


def _graph():
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _cycle(graph):
    """A cycle of the graph as a list of modules, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                return stack[stack.index(other) :] + [other]
            if other not in state:
                cycle = visit(other)
                if cycle:
                    return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_the_import_graph_is_read_from_the_source():
    graph = _graph()
    # a few edges known to exist, so that an empty graph cannot pass
    assert "keras_neuromod.agents" in graph["keras_neuromod.zoo"]
    assert "keras_neuromod.bases" in graph["keras_neuromod.optimizers.adam"]
    assert "keras_neuromod.optimizers.base" in graph["keras_neuromod.optimizers"]
    assert "keras_neuromod.zoo" in graph["keras_neuromod"]


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_agents_bases_and_the_zoo_import_no_optimizer():
    graph = _graph()
    for module in ("keras_neuromod.agents", "keras_neuromod.bases", "keras_neuromod.zoo"):
        reached = _reachable(graph, module)
        assert not {m for m in reached if m.startswith("keras_neuromod.optimizers")}, module
        assert "keras_neuromod" not in reached, module
