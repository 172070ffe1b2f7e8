"""End-to-end: the lt-train binary on the embedded data, in a subprocess."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

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


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_end_a_run_with_one_line_and_it_resumes(tmp_path, signum, code):
    """What a cluster scheduler (SIGTERM) or a closed terminal (SIGHUP) sends: one line naming the signal and
    how to resume, exit 128 + signal, and the same command continues to the uninterrupted result."""
    args = ["--train_steps=200", "--eval_every=20", "--max_train_examples=600", "--jit_compile=false", "--seed=1"]
    out = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "lt_keras.bin.train", f"--output_dir={out}", *args], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "backup" / "chief" / "checkpoint").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, stderr[-2000:]
    name = signal.Signals(signum).name
    assert f"lt-train: stopped by {name}; re-run the same command to resume" in stderr and "Traceback" not in stderr
    assert not (out / "summary.json").exists()
    resumed = run_train("--output_dir", str(out), *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "steps 1-20 of 200" not in resumed.stdout + resumed.stderr  # continued from its checkpoint


def test_bad_seed_and_truncated_data_are_one_line(tmp_path):
    import gzip
    import shutil

    bad = run_train("--output_dir", str(tmp_path / "s"), "--train_steps=2", "--seed=-1")
    assert bad.returncode != 0 and "--seed" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-1500:]
    data = tmp_path / "mnist"
    data.mkdir()
    for name, shape in (("train-images-idx3-ubyte", (30, 28, 28)), ("train-labels-idx1-ubyte", (30,)),
                        ("t10k-images-idx3-ubyte", (10, 28, 28)), ("t10k-labels-idx1-ubyte", (10,))):
        header = bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
        with gzip.open(data / f"{name}.gz", "wb") as f:
            f.write(header + bytes(int(np.prod(shape))))
    whole = (data / "train-images-idx3-ubyte.gz").read_bytes()
    (data / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])  # a download cut off
    cut = run_train("--output_dir", str(tmp_path / "d"), "--dataset=mnist", f"--data_dir={data}",
                    "--validation_size=5", "--train_steps=2")
    assert cut.returncode != 0 and "train-images-idx3-ubyte.gz" in cut.stderr, cut.stderr[-1500:]
    assert "EOFError" in cut.stderr and "Traceback" not in cut.stderr
    shutil.rmtree(data)


def test_help_shows_the_flags_and_no_tensorflow_start_up_lines():
    result = subprocess.run([sys.executable, "-m", "lt_keras.bin.train", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "--train_steps" in result.stdout, result.stderr[-2000:]
    assert "oneDNN" not in result.stdout + result.stderr and "absl::InitializeLog" not in result.stderr
