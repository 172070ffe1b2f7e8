"""Runs that cannot lose or fake a result: one writer per run directory, divergence and degenerate masks
refused, non-finite tickets refused, refused commands leave nothing behind, messages instead of tracebacks."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lt_keras import LtKerasError, Mask
from lt_keras._keras import keras
from lt_keras.errors import DivergedError, MaskError, RunDirError
from lt_keras.imp import ImpConfig
from lt_keras.methods.imp import search as imp_search
from lt_keras.runs import RunDir
from lt_keras.training import TrainConfig
from tests.conftest import IMP_TRAIN as TRAIN
from tests.conftest import REPO
from tests.conftest import build_lenet as build


def binary(module, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", f"lt_keras.bin.{module}", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- one writer per run directory -------------------------------------------------------------------------

HOLD = """
import sys, time
from lt_keras.runs import RunDir
RunDir(sys.argv[1]).open({"a": 1}, "")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_free(tmp_path):
    path = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"in use by another run \\(process {holder.pid}\\)"):
            RunDir(path).open({"a": 1}, "")
    finally:
        holder.kill()  # as kill -9: the kernel drops the lock with the process
        holder.wait()
    run = RunDir(path).open({"a": 1}, "")
    assert run.exists("config.json")


def test_a_holder_that_has_not_signed_yet_is_not_named_by_a_previous_pid(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (path / ".lock").write_text(f"{dead.pid}\n")  # left by an earlier run that has exited
    holder = subprocess.Popen([sys.executable, "-c", HOLD.replace('.open({"a": 1}, "")', ".lock()"), str(path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=r"in use by another run \(process starting up, not yet signed\)"):
            RunDir(str(path)).open({"a": 1}, "")
    finally:
        holder.kill()
        holder.wait()


def test_two_imp_runs_on_one_folder_one_refused_the_others_tickets_intact(tmp_path):
    out = str(tmp_path / "run")
    quick = ["--train_steps=40", "--eval_every=20", "--max_train_examples=300", "--rounds=2", "--jit_compile=false",
             f"--output_dir={out}"]
    runs = [binary("imp", *quick)]
    time.sleep(0.5)
    runs.append(binary("imp", *quick))
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, [r[2][-2000:] for r in results]
    refused = next(err for code, _, err in results if code != 0)
    assert "is in use by another run (process" in refused and "Traceback" not in refused
    from lt_keras.ticket import load_ticket

    for k in range(3):
        ticket = load_ticket(os.path.join(out, f"round_{k}", "ticket"))
        assert ticket.info.settings["round"] == k
    assert len(json.load(open(os.path.join(out, "summary.json")))["rounds"]) == 3


# --- a refused command leaves no run directory ------------------------------------------------------------

def test_a_command_refused_by_validation_leaves_no_run_directory_and_the_fix_runs(tmp_path):
    out = tmp_path / "run"
    refused = binary("train", "--batch_size=5000", "--train_steps=4", f"--output_dir={out}")
    code, _, err = refused.wait(timeout=300), *refused.communicate()
    assert code != 0 and "batch size 5000" in err and "Traceback" not in err, err[-2000:]
    assert not out.exists()
    missing = binary("train", "--dataset=mnist", f"--data_dir={tmp_path / 'nowhere'}", "--train_steps=4",
                     f"--output_dir={out}")
    code, _, err = missing.wait(timeout=300), *missing.communicate()
    assert code != 0 and f"--data_dir: {tmp_path / 'nowhere'} does not exist" in err and not out.exists(), err[-2000:]
    fixed = binary("train", "--batch_size=50", "--train_steps=4", "--max_train_examples=300",
                   "--jit_compile=false", f"--output_dir={out}")
    code, _, err = fixed.wait(timeout=300), *fixed.communicate()
    assert code == 0, err[-2000:]
    assert (out / "summary.json").exists()


def test_abandon_keeps_a_directory_that_holds_work(tmp_path):
    run = RunDir(tmp_path / "r").open({"a": 1}, "")
    (tmp_path / "r" / "round_0").mkdir()
    assert not run.abandon() and (tmp_path / "r" / "round_0").exists()
    old = RunDir(tmp_path / "r")
    old.open({"a": 1}, "")
    (tmp_path / "r" / "round_0").rmdir()
    assert not old.abandon()  # not created by this opener


def test_unwritable_output_folder_is_a_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot create"):
        RunDir(blocker / "run").open({}, "")


# --- divergence stops training, nothing is written ---------------------------------------------------------

@pytest.mark.parametrize("optimizer, lr, why", [("adam", 1e6, "over"), ("sgd", 1e4, "not finite|loss is nan")])
def test_divergence_stops_imp_with_no_ticket_or_round(tmp_path, data, optimizer, lr, why):
    train = TrainConfig(train_steps=12, eval_every=6, batch_size=60, seed=5, jit_compile=False,
                        optimizer=optimizer, learning_rate=lr)
    with pytest.raises(DivergedError, match=f"diverged by step 6 .*({why})"):
        imp_search(str(tmp_path), build, data, ImpConfig(rounds=1), train, verbose=0)
    assert not os.path.exists(tmp_path / "round_0")
    assert not any(p.name == "ticket" and p.parent.name.startswith("round_") and not p.parent.name.endswith(".partial")
                   for p in tmp_path.rglob("ticket"))


@pytest.mark.parametrize("per_call, stop", [("1", 20), ("auto", 50)])
def test_divergence_is_caught_between_evaluations(data, per_call, stop):
    """A NaN loss stops training within ``check_every`` steps (or the first call's end, with several steps per
    call: auto runs 50 here), not at the next evaluation 200 steps on."""
    from lt_keras.training import fit

    train = TrainConfig(train_steps=200, eval_every=200, batch_size=60, seed=5, jit_compile=False,
                        optimizer="sgd", learning_rate=1e4, steps_per_execution=per_call)
    calls = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: calls.append(batch))
    with pytest.raises(DivergedError, match=rf"diverged by step {stop} \(the training loss is nan\)"):
        fit(build(), data, train, callbacks=[counter], verbose=0)
    assert len(calls) == stop // (stop if per_call == "auto" else 1) - 1  # the guard runs before the user's hook


def test_a_supermask_at_a_runaway_rate_is_refused_not_recorded(tmp_path):
    """lr 1e30 throws the scores to ~1e28: finite, chance-level; no ticket or summary may record it."""
    out = tmp_path / "sm"
    proc = binary("supermask", "--learning_rate=1e30", "--optimizer=sgd", "--epochs=1", "--max_train_examples=500",
                  "--jit_compile=false", f"--output_dir={out}")
    code, _, err = proc.wait(timeout=300), *proc.communicate()
    assert code != 0 and "mask scores reached" in err and "Traceback" not in err, err[-2000:]
    assert not (out / "summary.json").exists() and not (out / "ticket").exists()


def test_diverged_binary_exits_non_zero_with_a_message(tmp_path):
    out = tmp_path / "run"
    proc = binary("imp", "--learning_rate=1e6", "--train_steps=12", "--eval_every=6", "--max_train_examples=300",
                  "--rounds=1", "--jit_compile=false", f"--output_dir={out}")
    code, _, err = proc.wait(timeout=300), *proc.communicate()
    assert code != 0 and "training diverged by step 6" in err and "Traceback" not in err, err[-2000:]
    assert not (out / "summary.json").exists() and not (out / "round_0").exists()


def test_json_never_holds_nan(tmp_path):
    from lt_keras.io_utils import atomic_write_json

    with pytest.raises(LtKerasError, match="non-finite"):
        atomic_write_json(str(tmp_path / "s.json"), {"acc": float("nan")})
    assert not (tmp_path / "s.json").exists()


# --- non-finite tickets are refused ------------------------------------------------------------------------

def test_nan_tickets_are_refused_on_write_and_on_load(tmp_path):
    from lt_keras.ticket import TicketInfo, load_ticket, write_ticket

    model = build()
    mask = Mask.ones_like(model)
    write_ticket(tmp_path / "good", model, mask, TicketInfo("test"))
    model.get_layer("fc2").kernel.assign(np.full((300, 100), np.nan, np.float32))
    with pytest.raises(LtKerasError, match="non-finite weights in .*fc2"):
        write_ticket(tmp_path / "nan", model, mask, TicketInfo("test"))
    assert not (tmp_path / "nan").exists()
    model.save(tmp_path / "good" / "model.keras")  # a NaN model slipped in by hand
    with pytest.raises(LtKerasError, match="non-finite weights"):
        load_ticket(tmp_path / "good")


def test_a_mask_npz_whose_values_differ_from_the_models_masks_is_refused(tmp_path):
    from lt_keras.ticket import TicketInfo, load_ticket, write_ticket

    model = build()
    mask = Mask({k: (np.random.RandomState(i).rand(*v.shape) < 0.5).astype(np.float32)
                 for i, (k, v) in enumerate(Mask.ones_like(model).items())})
    mask.apply_to(model)
    write_ticket(tmp_path / "t", model, mask, TicketInfo("test"))
    assert load_ticket(tmp_path / "t").mask == mask
    Mask({k: 1.0 - v for k, v in mask.items()}).save(tmp_path / "t" / "mask.npz")  # same shapes, other values
    with pytest.raises(LtKerasError, match="differ from mask.npz"):
        load_ticket(tmp_path / "t")


def test_ticket_json_must_be_an_object(tmp_path):
    from lt_keras.ticket import TicketInfo, load_ticket, write_ticket

    model = build()
    write_ticket(tmp_path / "t", model, Mask.ones_like(model), TicketInfo("test"))
    (tmp_path / "t" / "ticket.json").write_text("[1, 2]")
    with pytest.raises(LtKerasError, match="must hold a JSON object, got list"):
        load_ticket(tmp_path / "t")


def test_export_parity_fails_on_nan():
    from lt_keras.export import max_abs_diff

    assert max_abs_diff([1.0, 2.0], [1.0, 2.5]) == 0.5
    assert max_abs_diff([np.nan, 2.0], [1.0, 2.0]) == float("inf") > 1e-5
    assert max_abs_diff([1.0], [np.inf]) == float("inf")


def test_export_parity_catches_a_wrong_strip(tmp_path, monkeypatch):
    """The parity check compares the SavedModel with the masked model: a strip that loses the mask fails it."""
    import lt_keras.export as export

    model = build()
    Mask({k: (np.random.RandomState(i).rand(*v.shape) < 0.3).astype(np.float32)
          for i, (k, v) in enumerate(Mask.ones_like(model).items())}).apply_to(model)
    right = export.plain_model

    def loses_the_mask(m):  # kernels back at values where the mask prunes
        plain = right(m)
        for layer in plain.layers:
            if getattr(layer, "kernel", None) is not None:
                layer.kernel.assign(layer.kernel + 0.05)
        return plain

    monkeypatch.setattr(export, "plain_model", loses_the_mask)
    x = np.random.RandomState(0).rand(8, 28, 28, 1).astype(np.float32)
    with pytest.raises(LtKerasError, match="differs from the masked model"):
        export.export_ticket(model, str(tmp_path / "sm"), x, tolerance=1e-5)
    assert not (tmp_path / "sm").exists()


def test_damaged_mask_files_are_messages(tmp_path):
    good = tmp_path / "m.npz"
    Mask({"a/kernel": np.ones(4)}).save(good)
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(MaskError, match="not a readable .npz"):
        Mask.load(truncated)
    bare = tmp_path / "b.npy"
    np.save(bare, np.ones(3))
    with pytest.raises(MaskError, match="one bare array"):
        Mask.load(bare)


# --- degenerate masks are refused before training ----------------------------------------------------------

@pytest.mark.parametrize("config, layer, fix", [
    (ImpConfig(prune_rate_fc=0.99, prune_rate_output=0.99, rounds=4), "fc1", "lower prune_rate_fc or rounds"),
    (ImpConfig(target_density=0.0001), "fc1", "raise target_density"),
    (ImpConfig(prune_rate_output=0.9, rounds=3), "output", "lower prune_rate_output"),
])
def test_degenerate_schedules_are_refused_before_training(tmp_path, data, config, layer, fix):
    trains = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: pytest.fail("trained a degenerate schedule"))
    with pytest.raises(LtKerasError, match=f"layer '{layer}' would keep .* fewer than its .* outputs.*{fix}"):
        imp_search(str(tmp_path), build, data, config, TRAIN, verbose=0, callbacks=[trains])
    assert not any(p.name.startswith("round_") for p in tmp_path.iterdir())


def test_check_mask_viable_names_the_starved_layer():
    # Pooled pruning at 0.9 x 2 rounds leaves 1% overall: the output layer's 10 units lose every weight first.
    from lt_keras.imp import check_mask_viable

    model = build()
    mask = Mask({k: (np.arange(v.size).reshape(v.shape) < 5).astype(np.float32) if k == "output/kernel" else v
                 for k, v in Mask.ones_like(model).items()})
    with pytest.raises(LtKerasError, match="layer 'output' would keep 5 of 1000 weights, fewer than its 10"):
        check_mask_viable(model, mask, "cause")
    check_mask_viable(model, Mask.ones_like(model))


# --- export: never touches a user's folders, resumes after a kill, one writer ---------------------------------

def _ticket(folder, seed=0):
    from lt_keras.ticket import TicketInfo, write_ticket

    keras.utils.set_random_seed(seed)
    model = build()
    Mask({k: (np.random.RandomState(seed + i).rand(*v.shape) < 0.3).astype(np.float32)
          for i, (k, v) in enumerate(Mask.ones_like(model).items())}).apply_to(model)
    write_ticket(folder, model, Mask.from_model(model), TicketInfo("test"))
    return folder


def test_export_leaves_a_users_sibling_folders_alone_and_completes_after_a_kill(tmp_path):
    from lt_keras.data import DataConfig
    from lt_keras.export import export_ticket, export_ticket_dir
    from lt_keras.ticket import load_ticket

    data = DataConfig(max_train_examples=100).load()
    ticket, target = _ticket(tmp_path / "t"), tmp_path / "out" / "model"
    for name in ("model.partial", "model.dense_for_size", "model.tmp"):  # a user's folders with files
        (tmp_path / "out" / name).mkdir(parents=True)
        (tmp_path / "out" / name / "keep.txt").write_text("mine")
    # A kill right after the SavedModel was renamed into place: no report, no TFLite yet.
    export_ticket(load_ticket(ticket).model, str(target), data.x_test[:20])
    assert (target / "saved_model.pb").exists() and not (tmp_path / "out" / "model.report.json").exists()
    report = export_ticket_dir(str(ticket), str(target), data, parity_examples=20, tflite_quantization="none")
    assert report["max_abs_diff_saved_model"] <= 1e-5 and (tmp_path / "out" / "model.tflite").exists()
    assert (tmp_path / "out" / "model.report.json").exists()
    for name in ("model.partial", "model.dense_for_size", "model.tmp"):
        assert (tmp_path / "out" / name / "keep.txt").read_text() == "mine"
    assert not list((tmp_path / "out").glob(".model.lt-export*"))  # no scratch folder, no lock file
    with pytest.raises(LtKerasError, match="not empty"):  # another ticket's export is not overwritten
        export_ticket_dir(str(_ticket(tmp_path / "t2", seed=1)), str(target), data, parity_examples=20)


def test_a_second_export_into_the_same_folder_is_one_line(tmp_path):
    from lt_keras.export import _export_lock

    ticket, target = _ticket(tmp_path / "t"), str(tmp_path / "model")
    with _export_lock(os.path.abspath(target)):  # an export in progress (this process holds the lock)
        done = subprocess.run([sys.executable, "-m", "lt_keras.bin.export", f"--ticket_dir={ticket}",
                               f"--saved_model_dir={target}", "--max_train_examples=100"], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode != 0 and "--saved_model_dir: " in done.stderr, done.stderr[-2000:]
    assert "being exported by another process" in done.stderr
    assert "Traceback" not in done.stderr and not os.path.exists(target)


def test_a_full_disk_inside_tensorflow_is_one_line():
    """TensorFlow raises its own ResourceExhaustedError when a checkpoint write hits a full disk."""
    from lt_keras._keras import tf
    from lt_keras.bin.runner import user_errors

    full = tf.errors.ResourceExhaustedError(None, None, "backup/chief/ckpt.data-00000-of-00001.tempstate; "
                                            "No space left on device")
    with pytest.raises(SystemExit, match="lt-x: error: the disk is full .*re-run the same command to resume"):
        with user_errors("lt-x"):
            raise full
    with pytest.raises(tf.errors.ResourceExhaustedError):  # out of memory is not a full disk: re-raised
        with user_errors("lt-x"):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")


def test_a_ticket_holds_no_optimizer_whatever_the_writer_compiled(tmp_path):
    """A resumed IMP process compiles before its first ticket differently (an evaluation's default optimizer) than
    an uninterrupted one (the round's Adam): the ticket's model.keras must not depend on it."""
    import zipfile

    from lt_keras.ticket import TicketInfo, load_ticket, write_ticket

    configs = []
    for optimizer in ("rmsprop", "adam"):
        model = build()
        model.compile(optimizer, "mse")
        folder = write_ticket(tmp_path / optimizer, model, Mask.ones_like(model), TicketInfo("test"))
        with zipfile.ZipFile(os.path.join(folder, "model.keras")) as archive:
            configs.append(json.loads(archive.read("config.json")))
            assert not [n for n in archive.namelist() if "optimizer" in n]
        assert load_ticket(folder).model.optimizer is None
    assert "compile_config" not in configs[0] or configs[0]["compile_config"] is None
    assert configs[0] == configs[1]
