"""Shared fixtures: small models, and the optional real data beside the repo."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lt_keras._keras import keras
from lt_keras.training import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


# Short IMP rounds on the embedded digits: the tests of the IMP engine and of run reliability share them.
IMP_TRAIN = TrainConfig(train_steps=12, eval_every=6, batch_size=60, seed=5, jit_compile=False)


def build_lenet():
    from lt_keras.models import build_model

    return build_model("lenet_300_100", (28, 28, 1), 10)


@pytest.fixture(scope="module")
def data():
    """600 embedded training digits (and the embedded validation and test splits)."""
    from lt_keras.data import DataConfig

    return DataConfig(max_train_examples=600).load()


# Tests that take a minute or more (whole binaries and tools in subprocesses) run first: on several workers
# (pytest-xdist, -n auto) the long ones then overlap at the start instead of forming the tail.
SLOW_FIRST = ("test_tools.py::test_reproduce_quick", "test_tools.py::test_bench_quick",
              "test_early_bird.py::test_binary_finds", "test_early_bird.py::test_int8_search",
              "test_retrain_export.py::test_multi_worker", "test_retrain_export.py::test_mirrored",
              "test_supermask_binary.py::test_learned", "test_supermask_binary.py::test_untrained",
              "test_imp_binary.py::test_imp_run", "test_imp_binary.py::test_int8", "test_reliability.py::test_two_imp")


def pytest_collection_modifyitems(items):
    def rank(item):  # slowest first, in SLOW_FIRST's order; the rest keep theirs (the sort is stable)
        return next((i for i, name in enumerate(SLOW_FIRST) if name in item.nodeid), len(SLOW_FIRST))

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


def random_mask(shape, density, seed):
    rng = np.random.RandomState(seed)
    return (rng.rand(*shape) < density).astype(np.float32)


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real datasets not present at {SHARED_DATA} (only on the project's own machines)")
    return SHARED_DATA


def kill_binary_when(module, args, ready, timeout=300):
    """Start ``python -m module args`` and ``kill -9`` it as soon as ``ready()`` is true (it must not finish
    first). A test then runs the same command again to check that it resumes as if never killed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"{module} ended (exit {proc.returncode}) before the kill point: "
                                     f"{proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                raise AssertionError(f"{module} did not reach the kill point in {timeout} s")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
