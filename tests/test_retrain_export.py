"""Tickets in use: lt-retrain (XLA, strategies, resume) and lt-export (SavedModel/TFLite parity, bad tickets)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lt_keras import LtKerasError, Mask, masked_layers
from lt_keras._keras import keras, tf
from lt_keras.data import DataConfig
from lt_keras.imp import ImpConfig
from lt_keras.methods.imp import search as imp_search
from lt_keras.models import build_model
from lt_keras.ticket import load_ticket
from lt_keras.training import TrainConfig, fit
from tests.conftest import REPO, start_workers, wait_workers

QUICK_DATA = ["--max_train_examples=600", "--validation_size=200"]


def run(module, *args, env=None, timeout=300):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data():
    return DataConfig(max_train_examples=600, validation_size=200).load()


@pytest.fixture(scope="module")
def imp_ticket(tmp_path_factory, data):
    run_dir = str(tmp_path_factory.mktemp("imp"))
    config = TrainConfig(train_steps=10, eval_every=5, seed=1, jit_compile=False)
    imp_search(run_dir, lambda: build_model("lenet_300_100", (28, 28, 1), 10), data, ImpConfig(rounds=1), config,
               verbose=0)
    return os.path.join(run_dir, "round_1", "ticket")


def test_xla_and_non_xla_retraining_agree(imp_ticket, data):
    weights = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = load_ticket(imp_ticket).model
        fit(model, data, TrainConfig(train_steps=5, eval_every=5, jit_compile=jit, seed=0), verbose=0)
        weights[jit] = model.get_weights()
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_retrain_keeps_masks_and_exports_to_a_plain_saved_model(imp_ticket, tmp_path):
    out = tmp_path / "retrain"
    result = run("lt_keras.bin.retrain", f"--ticket_dir={imp_ticket}", f"--output_dir={out}", "--train_steps=20",
                 "--eval_every=10", *QUICK_DATA)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned_weights_nonzero"] == 0 and summary["jit_compile"] and summary["replicas"] == 1
    retrained = load_ticket(out / "ticket")
    assert retrained.mask == load_ticket(imp_ticket).mask and retrained.info.retrained_from
    assert not (out / "backup").exists()

    exported = tmp_path / "export" / "lenet"
    result = run("lt_keras.bin.export", f"--ticket_dir={out / 'ticket'}", f"--saved_model_dir={exported}",
                 "--tflite", *QUICK_DATA)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "export" / "lenet.report.json").read_text())
    assert report["max_abs_diff_saved_model"] <= 1e-5
    assert report["tflite_max_abs_diff"] <= 1e-4  # float TFLite: documented tolerance
    # 20% of the kernels are zeros: the sparse export zips clearly smaller than its dense twin.
    assert report["zipped_bytes_exported"] < 0.95 * report["zipped_bytes_dense"]
    assert abs(report["total_sparsity"] - (1 - retrained.mask.density())) < 1e-6

    # Serve in a process that never imports lt_keras.
    x = np.random.RandomState(0).randn(7, 28, 28, 1).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", retrained.model(x, training=False).numpy())
    script = f"""
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(exported)!r})
y = m.signatures["serving_default"](inputs=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))["logits"].numpy()
assert not any(name.startswith("lt_keras") for name in sys.modules), "lt_keras was imported"
zeros = sum(int((v.numpy() == 0).sum()) for v in m.variables if len(v.shape) == 2)
print(float(np.max(np.abs(y - np.load({str(tmp_path / 'ref.npy')!r})))), zeros)
"""
    served = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert served.returncode == 0, served.stderr[-2000:]
    diff, zeros = served.stdout.split()
    assert float(diff) <= 1e-5
    assert int(zeros) == sum(int((v == 0).sum()) for v in retrained.mask.values())

    # The same export again completes (what a run killed before its report does); another ticket is refused.
    again = run("lt_keras.bin.export", f"--ticket_dir={out / 'ticket'}", f"--saved_model_dir={exported}", *QUICK_DATA)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "export" / "lenet.report.json").read_text())["max_abs_diff_saved_model"] <= 1e-5
    other = run("lt_keras.bin.export", f"--ticket_dir={imp_ticket}", f"--saved_model_dir={exported}", *QUICK_DATA)
    assert other.returncode != 0 and "not empty" in other.stderr
    assert not list((tmp_path / "export").glob(".lenet.lt-export-*"))  # no scratch folder left behind

    # Fully quantized TFLite (int8 weights, activations, inputs) calibrated on training digits: it keeps the
    # ticket's zeros and agrees with the float model on nearly every prediction.
    from lt_keras import export

    digits = DataConfig(max_train_examples=300).load()
    int8 = export.to_tflite(str(exported), "int8", digits.x_train[:50][:, None])
    interpreter = tf.lite.Interpreter(model_content=int8)
    assert {np.int8} <= {d["dtype"] for d in interpreter.get_tensor_details()}  # int8 weights and activations
    outputs = export.tflite_outputs(int8, digits.x_test[:200])
    reference = retrained.model(digits.x_test[:200], training=False).numpy()
    assert np.mean(outputs.argmax(1) == reference.argmax(1)) >= 0.95


def test_mirrored_strategy_over_two_cpu_devices(imp_ticket, tmp_path):
    out = tmp_path / "mirrored"
    result = run("lt_keras.bin.retrain", f"--ticket_dir={imp_ticket}", f"--output_dir={out}", "--strategy=mirrored",
                 "--cpu_devices=2", "--train_steps=10", "--eval_every=5", *QUICK_DATA)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["pruned_weights_nonzero"] == 0


def test_multi_worker_strategy_with_two_local_workers(imp_ticket, tmp_path):
    out = tmp_path / "multi"
    outputs = wait_workers(start_workers("lt_keras.bin.retrain", [
        f"--ticket_dir={imp_ticket}", f"--output_dir={out}", "--train_steps=10", "--eval_every=5", "--nojit_compile",
        *QUICK_DATA]), timeout=240)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["pruned_weights_nonzero"] == 0
    # Both workers trained the same replicated model: each prints the same evaluations; only the chief's
    # run directory exists (the other worker wrote to a scratch folder it removed).
    printed = [json.loads(stdout[stdout.index("{\n"): stdout.rindex("\n}") + 2]) for stdout, _ in outputs]
    for key in ("final_test_accuracy", "early_stop_test_accuracy", "early_stop_step", "density"):
        assert printed[0][key] == printed[1][key] == summary[key], key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi"]


def test_broken_tickets_give_clear_errors(imp_ticket, tmp_path):
    def copy(name):
        target = tmp_path / name
        shutil.copytree(imp_ticket, target)
        return target

    missing = copy("missing")
    (missing / "mask.npz").unlink()
    with pytest.raises(LtKerasError, match=r"missing \['mask.npz'\]"):
        load_ticket(missing)
    corrupted = copy("corrupted")
    (corrupted / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(LtKerasError, match="model.keras is unreadable"):
        load_ticket(corrupted)
    wrong = copy("wrong")
    mask = Mask.load(wrong / "mask.npz")
    Mask({k: v[:-1] if k == "fc1/kernel" else v for k, v in mask.items()}).save(wrong / "mask.npz")
    with pytest.raises(LtKerasError, match="does not fit"):
        load_ticket(wrong)
    result = run("lt_keras.bin.retrain", f"--ticket_dir={missing}", f"--output_dir={tmp_path / 'r'}", *QUICK_DATA)
    assert result.returncode != 0 and "missing ['mask.npz']" in result.stderr and "Traceback" not in result.stderr
    result = run("lt_keras.bin.export", f"--ticket_dir={wrong}", f"--saved_model_dir={tmp_path / 'e'}", *QUICK_DATA)
    assert result.returncode != 0 and "does not fit" in result.stderr and "Traceback" not in result.stderr


def test_supermask_ticket_retrains_and_exports(tmp_path):
    sm = tmp_path / "sm"
    result = run("lt_keras.bin.supermask", f"--output_dir={sm}", "--epochs=1", "--optimizer=sgd",
                 "--learning_rate=50", "--batch_size=100", "--estimator=topk", "--nojit_compile", *QUICK_DATA)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "retrain"
    result = run("lt_keras.bin.retrain", f"--ticket_dir={sm / 'ticket'}", f"--output_dir={out}", "--train_steps=10",
                 "--eval_every=5", *QUICK_DATA)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "supermask" and summary["pruned_weights_nonzero"] == 0
    assert all(l.kernel.trainable for l in masked_layers(load_ticket(out / "ticket").model))
    result = run("lt_keras.bin.export", f"--ticket_dir={out / 'ticket'}", f"--saved_model_dir={tmp_path / 'e'}",
                 *QUICK_DATA)
    assert result.returncode == 0, result.stderr[-3000:]


def test_an_int8_found_ticket_reports_int8_after_retraining_and_export(imp_ticket, data, tmp_path):
    """ticket.json has one precision field, found_at_precision; retraining (always fp32) keeps it."""
    import dataclasses

    from lt_keras.export import export_ticket_dir
    from lt_keras.methods.retrain import retrain
    from lt_keras.ticket import write_ticket

    source = load_ticket(imp_ticket)
    int8_found = str(tmp_path / "int8_ticket")
    write_ticket(int8_found, source.model, source.mask, dataclasses.replace(source.info, found_at_precision="int8"))
    summary = retrain(str(tmp_path / "retrain"), int8_found, data,
                      TrainConfig(train_steps=2, eval_every=2, jit_compile=False))
    retrained = load_ticket(tmp_path / "retrain" / "ticket")
    assert summary["found_at_precision"] == "int8" and retrained.info.found_at_precision == "int8"
    assert retrained.info.settings == source.info.settings and retrained.info.retrained_from == int8_found
    stored = json.loads((tmp_path / "retrain" / "ticket" / "ticket.json").read_text())
    assert "precision" not in stored and "search_precision" not in stored
    report = export_ticket_dir(str(tmp_path / "retrain" / "ticket"), str(tmp_path / "saved"), data)
    assert report["found_at_precision"] == "int8" and report["method"] == "imp"


def test_ticket_json_from_before_found_at_precision_still_loads(imp_ticket, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(imp_ticket, legacy)
    info = json.loads((legacy / "ticket.json").read_text())
    info.pop("found_at_precision")
    info.update(precision="fp32", search_precision={"precision": "int8", "weight_bits": 8})
    (legacy / "ticket.json").write_text(json.dumps(info))
    loaded = load_ticket(legacy).info
    assert loaded.found_at_precision == "int8" and "precision" not in loaded.settings


def test_hand_edited_ticket_json_and_a_contradicting_flag_are_refused(imp_ticket, tmp_path):
    """ticket.json's numbers are checked where the tools read them; the ticket defines the model (no --model)."""
    for edit, message in (({"round": "two"}, "'round', a number"), ({"density": "lots"}, "density must be"),
                          ({"density": float("nan")}, "NaN is not a number"), ({"round": None}, "'round'")):
        folder = tmp_path / f"t{len(message)}"
        shutil.copytree(imp_ticket, folder)
        info = json.loads((folder / "ticket.json").read_text())
        info.update(edit)
        if edit.get("round", 0) is None:
            del info["round"]
        (folder / "ticket.json").write_text(json.dumps(info))
        with pytest.raises(LtKerasError, match=message):
            load_ticket(folder)
    result = run("lt_keras.bin.retrain", f"--ticket_dir={imp_ticket}", f"--output_dir={tmp_path / 'r'}",
                 "--model=conv2", "--train_steps=2", *QUICK_DATA)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "--model: the ticket holds a 'lenet_300_100' model, not 'conv2'" in result.stderr
    assert not (tmp_path / "r").exists()
    # The paper's flagfile (with its --model) retrains its own ticket, and flags.txt records the ticket's model.
    same = run("lt_keras.bin.retrain", "--flagfile=flags/lenet300_mnist_dense.flags", f"--ticket_dir={imp_ticket}",
               f"--output_dir={tmp_path / 's'}", "--train_steps=2", "--eval_every=2", "--dataset=mnist_5k",
               "--validation_size=500", "--max_train_examples=300")
    assert same.returncode == 0, same.stderr[-2000:]
    assert "--model=lenet_300_100" in (tmp_path / "s" / "flags.txt").read_text()
