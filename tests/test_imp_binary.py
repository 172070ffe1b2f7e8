"""End-to-end: the lt-imp binary on the embedded data, in a subprocess."""
import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO


def run_imp(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "lt_keras.bin.imp", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


QUICK = ["--train_steps=10", "--eval_every=5", "--max_train_examples=300", "--rounds=1", "--jit_compile=false"]


def test_imp_run_writes_rounds_report_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = run_imp("--output_dir", str(out), "--controls=random_prune", *QUICK)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("summary.json", "report.png", "flags.txt", "round_0/metrics.json", "round_1/mask.npz",
                 "round_1/ticket/model.keras", "round_1/ticket/mask.npz", "round_1/ticket/ticket.json"):
        assert (out / name).exists(), name
    rounds = json.loads((out / "summary.json").read_text())["rounds"]
    assert [r["density"] for r in rounds] == [1.0, (188_160 + 24_000 + 900) / 266_200]
    assert "random_prune@end" in first.stdout
    # Progress: a header per round (with an ETA once a round is done), intervals in steps, no "Epoch i/N".
    assert "=== round 0 of 1: 100.0% of weights\n" in first.stdout
    assert re.search(r"=== round 1 of 1: 80\.0% of weights, ETA \d+ (s|min)", first.stdout), first.stdout[-2000:]
    assert "steps 1-5 of 10\n" in first.stdout and re.search(r"steps 6-10 of 10, ETA \d+ s", first.stdout)
    assert "Epoch " not in first.stdout
    assert "Sharding callback" not in first.stderr  # no TensorFlow INFO lines between the progress lines
    again = run_imp(f"--flagfile={out / 'flags.txt'}")
    assert again.returncode == 0 and "nothing to train" in again.stderr
    def table(stdout):
        lines = stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("round"))
        return lines[start : start + 3]

    assert table(again.stdout) == table(first.stdout)


def test_bad_flags_leave_the_run_dir_as_it_was(tmp_path):
    out = tmp_path / "run"
    assert run_imp("--output_dir", str(out), *QUICK).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cases = [  # one config error (the others are ImpConfig's tests, in-process) and a mismatched run directory
        (["--rounds=0"], "--rounds"),
        (["--rounds=2"], "different configuration"),
    ]
    for extra, message in cases:
        result = run_imp("--output_dir", str(out), *QUICK, *extra)
        assert result.returncode != 0, extra
        assert message in result.stderr and "Traceback" not in result.stderr, (extra, result.stderr[-1500:])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_int8_search_writes_fp32_tickets(tmp_path):
    from lt_keras.ticket import load_ticket

    out = tmp_path / "int8"
    result = run_imp("--output_dir", str(out), "--precision=int8", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    ticket = load_ticket(out / "round_1" / "ticket")
    assert ticket.info.found_at_precision == "int8" and ticket.info.settings["weight_bits"] == 8
    assert not any(type(l).__name__.startswith("Quantize") for l in ticket.model.layers)
    bad = run_imp("--output_dir", str(tmp_path / "bad"), "--precision=int8", "--weight_bits=1", *QUICK)
    assert bad.returncode != 0 and "--weight_bits" in bad.stderr and "Traceback" not in bad.stderr
