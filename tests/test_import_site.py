"""Imports: Keras 2 has one import site, lt_keras/_keras.py (TFMOT needs tf_keras); no import cycle inside lt_keras."""
import ast
import os

from tests.conftest import REPO

FORBIDDEN = {"keras", "tf_keras"}


def imported_roots(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def python_files(*folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            yield from (os.path.join(root, f) for f in files if f.endswith(".py"))


# Keras 3 (``keras``) is the users' Keras: besides the import site (``keras3()``), only the bridge's test
# imports it, to build Keras 3 models.
KERAS3_ALLOWED = {"test_keras3.py"}


def test_only_the_import_site_imports_keras():
    offenders = [
        os.path.relpath(path, REPO)
        for path in python_files("lt_keras", "tools", "tests")
        if os.path.basename(path) != "_keras.py"
        and (FORBIDDEN - ({"keras"} if os.path.basename(path) in KERAS3_ALLOWED else set())) & set(imported_roots(path))
    ]
    assert offenders == []


def test_the_import_site_is_keras_2():
    from lt_keras._keras import keras

    assert keras.__version__.startswith("2.")
    assert keras.__name__ == "tf_keras"


def import_graph():
    """Module -> the lt_keras modules it imports, at module level or inside functions (a lazy import is still a
    dependency)."""
    root = os.path.join(REPO, "lt_keras")
    graph = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                deps = set()
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lt_keras"):
                        deps.add(node.module)
                        deps.update(f"{node.module}.{a.name}" for a in node.names)  # from lt_keras import mask
                    elif isinstance(node, ast.Import):
                        deps.update(a.name for a in node.names if a.name.startswith("lt_keras"))
                graph[module] = deps
    return {m: {d for d in deps if d in graph and d != m and d != "lt_keras"} for m, deps in graph.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_lt_keras():
    graph = import_graph()
    assert "lt_keras.layers" in graph["lt_keras.mask"]  # the graph sees lazy imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
