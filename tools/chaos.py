"""Probe lt-imp as a machine's faults and a user's mistakes would: kills, Ctrl-C, two writers, a full disk.

    bash tools/env.sh python tools/chaos.py                 # ~10 minutes on 2 cores
    bash tools/env.sh python tools/chaos.py --scenarios=two_writers,full_disk

Every scenario runs the quick start (flags/quickstart.flags: LeNet-300-100 on
the embedded digits, 3 pruning rounds with the random-reinit control) with
``--train_steps`` iterations a round, and compares with one uninterrupted run
of the same command: every round's mask, ticket weights and metrics (wall
time aside) must be bit-identical. Prints a table (scenario, expected,
observed, pass) and exits non-zero if any scenario fails.

- kill_resume: ``kill -9`` at a seeded list of moments, resuming after each;
- ctrl_c: SIGINT mid-run: one line, no traceback, exits within seconds; the re-run finishes identically;
- two_writers: two runs on one folder at once: one refused naming the other's PID, the other's tickets intact;
- full_disk: the run directory on a 4 MB tmpfs (skipped where this process cannot mount one): a one-line
  error, nothing truncated outside ``.partial``, and the run completes once the disk has room.
"""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ("kill_resume", "ctrl_c", "two_writers", "full_disk")
flags.DEFINE_list("scenarios", list(SCENARIOS), "Scenarios to run.")
flags.DEFINE_integer("train_steps", 200, "Iterations per round of the quick start.")
flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
FLAGS = flags.FLAGS
# The uninterrupted run: its rounds (what every scenario must end with) and its wall time (where kill_resume
# draws its kill moments).
Reference = collections.namedtuple("Reference", ["rounds", "seconds"])


def imp_command(out):
    return [sys.executable, "-m", "lt_keras.bin.imp", "--flagfile=flags/quickstart.flags",
            f"--train_steps={FLAGS.train_steps}", f"--eval_every={FLAGS.train_steps // 2}", f"--output_dir={out}"]


def start(out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(imp_command(out), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc, timeout=900):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def record(run_dir):
    """Rounds -> (mask arrays, metrics without wall time, ticket weights); what must match bit for bit."""
    from lt_keras.ticket import load_ticket

    rounds = {}
    for k in range(4):
        folder = os.path.join(run_dir, f"round_{k}")
        if not os.path.exists(os.path.join(folder, "metrics.json")):
            break
        metrics = json.load(open(os.path.join(folder, "metrics.json")))
        metrics.pop("wall_time_s")
        for control in metrics.get("controls", {}).values():
            control.pop("wall_time_s", None)
        ticket = load_ticket(os.path.join(folder, "ticket"))
        rounds[k] = (dict(ticket.mask), metrics, ticket.model.get_weights())
    return rounds


def same(a, b):
    if sorted(a) != sorted(b):
        return f"rounds {sorted(a)} vs {sorted(b)}"
    for k in a:
        (mask_a, metrics_a, weights_a), (mask_b, metrics_b, weights_b) = a[k], b[k]
        if any(not np.array_equal(mask_a[key], mask_b[key]) for key in mask_a):
            return f"round {k}: masks differ"
        if metrics_a != metrics_b:
            diff = sorted(key for key in metrics_a if metrics_a[key] != metrics_b.get(key))
            return f"round {k}: metrics differ in {diff}"
        if any(not np.array_equal(x, y) for x, y in zip(weights_a, weights_b)):
            return f"round {k}: ticket weights differ"
    return None


def kill_resume(root, reference):
    out = os.path.join(root, "killed")
    # Within the reference's own wall time, so each kill lands mid-run on a machine of any speed.
    fractions = np.random.RandomState(FLAGS.seed).uniform(0.3, 0.9, size=3)
    moments = [float(t) for t in (fractions * reference.seconds).round(1)]
    kills = 0
    for moment in moments:
        proc = start(out)
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    code, _, err = finish(start(out))
    problem = f"exit {code}: {err[-300:]}" if code else same(record(out), reference.rounds)
    stray = [p for p in os.listdir(out) if p.endswith(".partial")]
    observed = f"{kills} kills at {moments} s, resumed: " + (problem or "identical") + (
        f"; stray {stray}" if stray else "")
    return "killed at least once; identical masks, weights and metrics", observed, (
        kills > 0 and problem is None and not stray)


def ctrl_c(root, reference):
    out = os.path.join(root, "interrupted")
    proc = start(out)
    time.sleep(15)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    code, _, err = finish(proc)
    took = time.time() - sent
    lines = [line for line in err.splitlines() if "lt-imp:" in line]
    one_line = bool(lines) and "interrupted" in lines[-1] and "Traceback" not in err
    code2, _, err2 = finish(start(out))
    problem = f"re-run exit {code2}: {err2[-300:]}" if code2 else same(record(out), reference.rounds)
    observed = (f"exit {code} after {took:.1f} s, message: {lines[-1] if lines else err[-200:]!r}; re-run: "
                + (problem or "identical"))
    return "one line, non-zero exit, identical after re-run", observed, (
        code != 0 and one_line and problem is None)


def two_writers(root, reference):
    out = os.path.join(root, "shared")
    first = start(out)
    time.sleep(1.0)
    second = start(out)
    results = [finish(first), finish(second)]
    codes = sorted(code for code, _, _ in results)
    refused = [err for code, _, err in results if code]
    winner = first if results[0][0] == 0 else second
    named = len(refused) == 1 and f"in use by another run (process {winner.pid})" in refused[0]
    problem = same(record(out), reference.rounds)
    observed = f"exit codes {codes}; refused: {refused[0].strip().splitlines()[-1] if refused else '-'}; " + (
        f"tickets: {problem}" if problem else "tickets identical to a lone run")
    return "one refused naming the holder; the other's tickets intact", observed, (
        codes[0] == 0 and codes[1] != 0 and named and problem is None)


def full_disk(root, reference):
    mount = os.path.join(root, "tmpfs")
    os.makedirs(mount)
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], stderr=subprocess.DEVNULL):
        return "one-line error, completes with room", "skipped: cannot mount a tmpfs here (needs root)", None
    try:
        out = os.path.join(mount, "run")
        code, _, err = finish(start(out))
        message = [line for line in err.splitlines() if "lt-imp:" in line]
        one_line = code != 0 and bool(message) and "disk is full" in message[-1] and "Traceback" not in err
        complete = all(os.path.exists(os.path.join(out, name, "metrics.json"))
                       for name in os.listdir(out) if name.startswith("round_") and "." not in name)
        moved = os.path.join(root, "after_full_disk")
        shutil.copytree(out, moved)
    finally:
        subprocess.call(["umount", mount])
    code2, _, err2 = finish(start(moved))
    problem = f"re-run exit {code2}: {err2[-300:]}" if code2 else same(record(moved), reference.rounds)
    observed = (f"exit {code}: {message[-1] if message else err[-200:]!r}; finished rounds complete: {complete}; "
                f"resumed with room: {problem or 'identical'}")
    return "one-line error, no truncated round, completes with room", observed, one_line and complete and not problem


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.scenarios) - set(SCENARIOS))
    if unknown:
        sys.exit(f"chaos: error: --scenarios: unknown {unknown}; choose from {list(SCENARIOS)}.")
    with tempfile.TemporaryDirectory(prefix="lt_chaos_") as root:
        print("reference: one uninterrupted quick start ...", flush=True)
        ref_dir = os.path.join(root, "reference")
        began = time.time()
        code, _, err = finish(start(ref_dir))
        if code:
            sys.exit(f"chaos: error: the uninterrupted run failed:\n{err[-2000:]}")
        reference = Reference(record(ref_dir), time.time() - began)
        rows = []
        for name in FLAGS.scenarios:
            began = time.time()
            expected, observed, ok = globals()[name](root, reference)
            rows.append((name, expected, observed, ok, time.time() - began))
            print(f"{name}: {'pass' if ok else 'skipped' if ok is None else 'FAIL'} ({rows[-1][4]:.0f} s)", flush=True)
    print("\n| scenario | expected | observed | pass |\n|---|---|---|---|")
    for name, expected, observed, ok, _ in rows:
        print(f"| {name} | {expected} | {observed} | {'yes' if ok else 'skipped' if ok is None else '**NO**'} |")
    if any(ok is False for *_, ok, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
