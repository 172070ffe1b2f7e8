"""End-to-end: the lt-train binary on the embedded data, in a subprocess."""
import json
import os
import subprocess
import sys

from tests.conftest import REPO, kill_binary_when


def run_train(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "lt_keras.bin.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_writes_run_dir_and_resume_trains_nothing(tmp_path):
    out = tmp_path / "run"
    args = ["--output_dir", str(out), "--train_steps=30", "--eval_every=15", "--max_train_examples=600", "--seed=2"]
    first = run_train(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("flags.txt", "config.json", "versions.json", "summary.json", "history.json", "model.keras"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_steps"] == 30 and summary["parameters"] == 266_610
    assert summary["final_test_accuracy"] > 0.5
    assert "test accuracy" in first.stdout
    # The saved flagfile re-runs the same run: it is complete, so nothing trains.
    again = run_train(f"--flagfile={out / 'flags.txt'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stderr
    assert json.loads((out / "summary.json").read_text()) == summary


def test_killed_train_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["--train_steps=200", "--eval_every=20", "--max_train_examples=600", "--jit_compile=false", "--seed=1"]
    whole = run_train("--output_dir", str(tmp_path / "whole"), *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "steps 1-20 of 200" in whole.stdout + whole.stderr
    out = tmp_path / "killed"
    kill_binary_when("lt_keras.bin.train", [f"--output_dir={out}", *args],
                     lambda: (out / "backup" / "chief" / "checkpoint").exists())
    assert not (out / "summary.json").exists()
    resumed = run_train("--output_dir", str(out), *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "steps 1-20 of 200" not in resumed.stdout + resumed.stderr  # continued, not started again
    assert (out / "history.json").read_text() == (tmp_path / "whole" / "history.json").read_text()
    assert not (out / "backup").exists()


def test_mismatched_run_dir_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "run"
    assert run_train("--output_dir", str(out), "--train_steps=2", "--max_train_examples=120").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = run_train("--output_dir", str(out), "--train_steps=3", "--max_train_examples=120")
    assert bad.returncode != 0
    assert "different configuration" in bad.stderr and "Traceback" not in bad.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_bad_flags_exit_nonzero_without_traceback(tmp_path):
    cases = [  # a flag absl refuses, a data folder, a missing --output_dir; the rest are parsed in-process
        (["--model=nope"], "value should be one of"),
        (["--output_dir", str(tmp_path / "x"), "--dataset=mnist", f"--data_dir={tmp_path}"], "lacks the MNIST-style"),
        (["--train_steps=2"], "--output_dir"),
    ]
    for args, message in cases:
        result = run_train(*args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr[-1500:])
        assert "Traceback" not in result.stderr, args
