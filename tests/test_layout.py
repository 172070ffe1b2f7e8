"""The shape of the tree: one method protocol, identical thin binaries, and an import graph without cycles."""
import ast
import configparser
import dataclasses
import inspect
import os

import pytest
from absl import flags

from lt_keras import methods
from lt_keras.distribute import Devices
from lt_keras.imp import ImpConfig
from lt_keras.methods import METHODS, RunSpec
from lt_keras.training import TrainConfig
from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "lt_keras")


def _modules():
    """Module name -> its parsed source, for every module of lt_keras."""
    out = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").replace(".__init__", "")
                out[module] = (path, ast.parse(open(path).read()))
    return out


def _imports(tree, top_level):
    """The lt_keras modules a module imports at its top level (or, with ``top_level=False``, inside functions)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and (node.col_offset == 0) == top_level:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(name, node.lineno) for name in names if name.startswith("lt_keras")]
    return found


def import_graph():
    modules = _modules()
    graph = {}
    for module, (_, tree) in modules.items():
        targets = set()
        for name, _ in _imports(tree, top_level=True):
            while name not in modules:  # ``from lt_keras.x import y``: module x
                name = name.rsplit(".", 1)[0]
            targets.add(name)
        graph[module] = targets - {module}
    return graph


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    # A package's __init__ imports its own modules; a cycle through an __init__ is then not a real one.
    cycles = sorted(m for m in graph if m in _reachable(graph, m) and m not in ("lt_keras", "lt_keras.methods"))
    assert not cycles, cycles


def test_the_ticket_format_sits_below_training_and_the_algorithms_below_run_directories():
    graph = import_graph()
    assert "lt_keras.training" not in _reachable(graph, "lt_keras.ticket")
    for algorithm in ("pruning", "criteria", "actions", "early_bird", "supermask", "imp", "topk", "bernoulli",
                      "ticket", "layers", "mask"):
        below = _reachable(graph, f"lt_keras.{algorithm}")
        assert not {m for m in below if m.startswith(("lt_keras.methods", "lt_keras.bin"))}, algorithm
        assert "lt_keras.runs" not in below, algorithm


def test_every_function_local_import_of_lt_keras_says_why():
    for module, (path, tree) in _modules().items():
        lines = open(path).read().splitlines()
        for name, lineno in _imports(tree, top_level=False):
            assert "#" in lines[lineno - 1], f"{path}:{lineno} imports {name} inside a function without a reason"


def test_every_method_has_the_same_entry_point():
    assert sorted(METHODS) == ["lt-early-bird", "lt-export", "lt-imp", "lt-retrain", "lt-supermask", "lt-train"]
    for name, method in METHODS.items():
        for entry in ("run", "report"):
            assert list(inspect.signature(getattr(method, entry)).parameters) == \
                list(inspect.signature(getattr(methods.Method, entry)).parameters), (name, entry)
        assert dataclasses.is_dataclass(method.Config) and method.Config.__dataclass_params__.frozen, name
        assert method.binary == name


def test_every_binary_is_the_same_few_lines():
    """lt_keras/bin/<name>.py: a docstring, then ``run = binary(<Method>)``, at most 40 lines; and setup.cfg's
    console scripts are exactly the methods."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].split("\n")
                   if line.strip())
    assert sorted(scripts) == sorted(METHODS)
    shapes = set()
    for script, target in scripts.items():
        module = target.split(":")[0]
        path = os.path.join(REPO, *module.split(".")) + ".py"
        source = open(path).read()
        assert len(source.splitlines()) <= 40, path
        tree = ast.parse(source)
        assert ast.get_docstring(tree), path
        body = ast.dump(ast.Module(body=tree.body[1:], type_ignores=[]))
        shapes.add(body.replace(f"'{METHODS[script].__name__}'", "'<Method>'"))
        assert target.endswith(":run")
    assert len(shapes) == 1, "the binaries differ in shape"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_flags_txt_gives_back_the_same_configs(name, tmp_path):
    """flags.txt is written from the configs (a library call writes one too) and parses back to them."""
    method_class = METHODS[name]
    ticket_dir = str(tmp_path / "ticket")
    config = {"lt-imp": ImpConfig(rounds=2, controls=("random_reinit",), mask1_rescaling=True, rewind="step:5"),
              "lt-retrain": methods.RetrainConfig(ticket_dir=ticket_dir),
              "lt-export": methods.ExportConfig(ticket_dir=ticket_dir, tflite=True)}.get(name)
    method = method_class(config)
    devices = Devices("mirrored", cpu_devices=2) if method_class.distributes else Devices()
    train = TrainConfig(train_steps=7, eval_every=7, lr_schedule="step", lr_decay_steps=(3, "2ep"),
                        warmup_steps="1ep2it", jit_compile=False)
    spec = RunSpec("conv2", train=train, devices=devices)
    if name == "lt-early-bird":
        spec = dataclasses.replace(spec, train=TrainConfig(epochs=2.0))
    assert method_class.distributes == (name != "lt-export")
    text = method.flagfile(str(tmp_path / "run"), spec)
    values = flags.FlagValues()
    method_class.define_flags(values)
    (tmp_path / "flags.txt").write_text(text)
    values(["prog", f"--flagfile={tmp_path / 'flags.txt'}"])
    again, run_dir, spec_again = method_class.from_flags(values)
    assert again.config == method.config and spec_again == spec and run_dir == str(tmp_path / "run")
