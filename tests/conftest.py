"""Shared fixtures: small models, and the optional real data beside the repo."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lt_keras._keras import keras
from lt_keras.training import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def start_workers(module, args, env=None):
    """Two loopback workers of one ``--strategy=multi_worker`` run of binary ``module``, each with its TF_CONFIG."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        worker_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}),
                          TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-m", module, "--strategy=multi_worker", *args], cwd=REPO,
                                      env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_workers(procs, timeout):
    """Each worker's (stdout, stderr), once every one has exited 0 (all are killed on a timeout)."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


def free_ports(n):
    """``n`` free TCP ports on the loopback interface (for multi-worker TF_CONFIG clusters)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


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
              "test_imp_binary.py::test_imp_run", "test_imp_binary.py::test_int8", "test_reliability.py::test_two_imp",
              "test_distribute.py::")

# The ``slow`` tests (``pytest -m "not slow"`` is the fast loop, <= 3 minutes on 2 cores; CI runs everything):
# every test that starts a Python subprocess (a binary, a tool, a fresh interpreter; ``_no_subprocess_unless_slow``
# refuses one elsewhere), and the in-process ones that take 10 s or more here (whole searches, kills and
# resumes, sweeps of many trainings). Names are prefixes of test ids (``file::name``).
SLOW = (
    "test_early_bird.py::test_binary_", "test_early_bird.py::test_int8_search",
    "test_flagfiles.py::test_help_lists", "test_flagfiles.py::test_every_binarys_help",
    "test_flagfiles.py::test_every_module_is_an_attribute",
    "test_imp_binary.py::", "test_train_binary.py::", "test_supermask_binary.py::", "test_distribute.py::",
    "test_keras3.py::test_importing_lt_keras_leaves", "test_keras3.py::test_the_8bit_path",
    "test_layers.py::test_savedmodel_serves_without_lt_keras",
    "test_export_report.py::test_sparse_serving_computes",
    "test_mask_holds.py::test_output_is_kernel_times_mask_on_every_replica",
    "test_precision.py::test_fp32_is_the_model_itself", "test_readme_example.py::",
    "test_reliability.py::test_a_second_writer", "test_reliability.py::test_a_holder_that_has_not_signed",
    "test_reliability.py::test_two_imp_runs", "test_reliability.py::test_a_command_refused",
    "test_reliability.py::test_a_supermask_at_a_runaway", "test_reliability.py::test_diverged_binary",
    "test_reliability.py::test_a_second_export",
    "test_retrain_export.py::test_retrain_keeps_masks", "test_retrain_export.py::test_mirrored_strategy",
    "test_retrain_export.py::test_multi_worker", "test_retrain_export.py::test_broken_tickets",
    "test_retrain_export.py::test_supermask_ticket_retrains", "test_retrain_export.py::test_hand_edited_ticket",
    "test_supermask.py::test_topk_fit_under_a_mirrored_strategy",
    "test_tools.py::test_bench_quick", "test_tools.py::test_reproduce", "test_tools.py::test_quick_mode_refuses",
    "test_tools.py::test_zhou_checks_on_hand_made_rounds",
    "test_training.py::test_coupled_weight_decay_is_applied_once_per_step_on_two_replicas",
    # in process, but whole searches, kills and resumes: 20-50 s each here
    "test_imp.py::test_round_killed_mid_training", "test_imp.py::test_killed_run_with_controls",
    "test_imp.py::test_resumed_round_trains", "test_imp.py::test_controls_differ", "test_imp.py::test_counts_rewind",
    "test_precision.py::test_stochastic_rounding_is_unbiased", "test_precision.py::test_fp32_int8_fp32_round_trip",
    "test_early_bird.py::test_early_bird_detects_the_same", "test_early_bird.py::test_killed_search",
    "test_early_bird.py::test_search_is_one_library_call", "test_models.py::test_every_layer_is_named",
    "test_models.py::test_imagenet_resnets", "test_supermask.py::test_learn_and_untrained",
    "test_supermask.py::test_killed_bernoulli", "test_nested.py::test_a_nested_ticket_is_found",
    "test_tools.py::test_every_planted_bug", "test_tools.py::test_early_bird_report_judges",
    # in process, sweeps of many trainings or compilations: 10-100 s each here
    "test_mask_holds.py::test_output_is_kernel_times_mask_after_every_write", "test_imp.py::test_every_mask1_action",
    "test_topk.py::test_ties_keep_the_lowest_indices", "test_topk.py::test_matches_sorting",
    "test_topk.py::test_within_and_the_straight_through_slope", "test_supermask.py::test_training_moves_only",
    "test_supermask.py::test_straight_through_gradient", "test_training.py::test_xla_setting_is_what",
    "test_training.py::test_killed_fit_with_backup", "test_training.py::test_late_rewind_snapshot",
    "test_retrain_export.py::test_xla_and_non_xla", "test_precision.py::test_xla_and_eager_agree",
    "test_precision.py::test_supermask_twin_keeps", "test_nested.py::test_int8_twin_of_a_nested",
    "test_nested.py::test_export_of_a_nested_ticket", "test_early_bird.py::test_int8_twin_detector",
    "test_imp.py::test_one_shot_and_global", "test_supermask.py::test_topk_keeps_exactly",
    "test_supermask.py::test_bernoulli_supermask_learns_the_same", "test_supermask.py::test_criterion_mask_and",
    "test_retrain_export.py::test_an_int8_found_ticket", "test_training.py::test_same_seed_same_result",
    "test_imp.py::test_mask0_actions_end_to_end", "test_imp.py::test_freeze_init_zero_mask_keeps",
)


def _is_slow(nodeid):
    name = nodeid.split("/")[-1]
    return any(name.startswith(prefix) for prefix in SLOW)


def pytest_collection_modifyitems(items):
    for item in items:
        if _is_slow(item.nodeid):
            item.add_marker(pytest.mark.slow)

    def rank(item):  # slowest first, in SLOW_FIRST's order; the rest keep theirs (the sort is stable)
        return next((i for i, name in enumerate(SLOW_FIRST) if name in item.nodeid), len(SLOW_FIRST))

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _no_subprocess_unless_slow(request, monkeypatch):
    """A test outside SLOW that starts a Python subprocess (a binary, a tool, a fresh interpreter) fails at once,
    naming the fix: the fast loop stays fast. Other programs (a library's own helpers) are let through."""
    if request.node.get_closest_marker("slow") is None:
        start = subprocess.Popen.__init__

        def guarded(self, args, *rest, **kwargs):
            program = args[0] if isinstance(args, (list, tuple)) and args else args
            if program == sys.executable:
                raise AssertionError(f"{request.node.nodeid} starts a Python subprocess: add it to SLOW in "
                                     "tests/conftest.py")
            start(self, args, *rest, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield


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
