"""End-to-end: lt-supermask (learned and untrained-mask modes) on the embedded data, in subprocesses."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lt_keras.ticket import load_ticket
from tests.conftest import REPO, kill_binary_when

QUICK = ["--epochs=1", "--max_train_examples=500", "--jit_compile=false", "--optimizer=sgd", "--learning_rate=50",
         "--batch_size=100", "--eval_samples=3"]


def run(module, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_learned_supermask_run_writes_ticket_and_curves(tmp_path):
    out = tmp_path / "sm"
    result = run("lt_keras.bin.supermask", f"--output_dir={out}", "--estimator=topk", "--keep_fraction=0.3",
                 "--weight_init=signed_kaiming_constant", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("summary.json", "curves.png", "history.json", "model.keras", "flags.txt"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluations"]["topk"]["samples"] == 1
    assert abs(summary["ticket_density"] - 0.3) < 1e-3
    assert "mask_density" in json.loads((out / "history.json").read_text())[-1]
    ticket = load_ticket(out / "ticket")
    assert ticket.info.method == "supermask" and ticket.info.settings["estimator"] == "topk"
    kernel = ticket.model.get_layer("fc1").kernel.numpy()
    kept = kernel[ticket.mask["fc1/kernel"] > 0]
    np.testing.assert_allclose(np.abs(kept), np.sqrt(2 / 784), rtol=1e-6)  # frozen signed Kaiming constants
    again = run("lt_keras.bin.supermask", f"--flagfile={out / 'flags.txt'}")
    assert again.returncode == 0 and "nothing to train" in again.stderr


def test_killed_bernoulli_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["--estimator=bernoulli", "--eval_every=2", *QUICK]
    reference = run("lt_keras.bin.supermask", f"--output_dir={tmp_path / 'whole'}", *args)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "killed"
    kill_binary_when("lt_keras.bin.supermask", [f"--output_dir={out}", *args],
                     lambda: (out / "backup" / "chief" / "checkpoint").exists())
    assert not (out / "summary.json").exists()
    resumed = run("lt_keras.bin.supermask", f"--output_dir={out}", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("history.json",):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text()
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "whole")]
    assert summaries[0]["evaluations"] == summaries[1]["evaluations"]
    tickets = [load_ticket(d / "ticket") for d in (out, tmp_path / "whole")]
    assert tickets[0].mask == tickets[1].mask
    assert not (out / "backup").exists()


def test_untrained_masks_from_a_dense_run(tmp_path):
    dense = tmp_path / "dense"
    trained = run("lt_keras.bin.train", f"--output_dir={dense}", "--train_steps=30", "--max_train_examples=500",
                  "--jit_compile=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (dense / "init_weights.npz").exists()
    out = tmp_path / "untrained"
    result = run("lt_keras.bin.supermask", f"--output_dir={out}", f"--from_run={dense}",
                 "--densities=0.2,0.5", "--max_train_examples=500")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [round(r["density"], 3) for r in rows] == [0.2, 0.5]
    # Each row is the default criterion's mask (large_final_same_sign) over theta_0 under signed constants,
    # as the library computes it: the binary wires the mask, the weights and the action through.
    from lt_keras import supermask
    from lt_keras._keras import keras
    from lt_keras.layers import masked_layers
    from lt_keras.data import DataConfig
    from lt_keras.io_utils import load_weights
    from lt_keras.mask import mask_key
    from lt_keras.models import build_model

    data = DataConfig(max_train_examples=500).load()

    def at_init():
        model = build_model("lenet_300_100", data.input_shape, data.num_classes)
        model.set_weights(load_weights(dense / "init_weights.npz"))
        return model

    final = {mask_key(l): l.kernel.numpy() for l in masked_layers(keras.models.load_model(dense / "model.keras"))}
    initial = {mask_key(l): l.kernel.numpy() for l in masked_layers(at_init())}
    for row in rows:
        mask = supermask.criterion_mask(initial, final, "large_final_same_sign", row["keep_per_layer"])
        expected = supermask.untrained_accuracy(at_init(), mask, "signed_constant", data.eval_dataset("test"))
        assert row["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_bad_flags_exit_with_a_clear_message(tmp_path):
    # One config error and one missing file; the configs' other checks are tested in-process.
    cases = [(["--estimator=topk", "--eval_mask=expected"], "--eval_mask"),
             ([f"--from_run={tmp_path}"], "init_weights.npz")]
    for extra, message in cases:
        result = run("lt_keras.bin.supermask", f"--output_dir={tmp_path / 'x'}", *QUICK, *extra)
        assert result.returncode != 0, extra
        assert message in result.stderr and "Traceback" not in result.stderr, (extra, result.stderr[-1500:])
