"""Keras 2 has one import site: lt_keras/_keras.py (TFMOT needs tf_keras)."""
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


def test_only_the_import_site_imports_keras():
    offenders = [
        os.path.relpath(path, REPO)
        for path in python_files("lt_keras", "tools", "tests")
        if os.path.basename(path) != "_keras.py" and FORBIDDEN & set(imported_roots(path))
    ]
    assert offenders == []


def test_the_import_site_selects_keras_2():
    from lt_keras._keras import keras

    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    assert keras.__version__.startswith("2.")
    assert keras.__name__ == "tf_keras"
