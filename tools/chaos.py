"""Probe the binaries as a machine's faults and a user's mistakes would: kills, signals, two writers, a full disk.

    bash tools/env.sh python tools/chaos.py                 # ~15 minutes on 2 cores
    bash tools/env.sh python tools/chaos.py --scenarios=two_writers,full_disk

Each scenario runs small versions of the binaries (the quick start for lt-imp:
LeNet-300-100 on the embedded digits, 3 pruning rounds with the random-reinit
control, ``--train_steps`` iterations a round) and compares what they leave
with one uninterrupted run of the same command, file by file over the whole
run directory (``compare_trees``: every file, with the few it cannot compare
byte for byte named and handled, see ``SKIPPED``). Prints a table (scenario,
expected, observed, pass) and exits non-zero if any scenario fails.

- kill_resume: ``kill -9`` at every planned moment of lt-imp, each a point in the run's own progress (a
  file it writes), so every kill lands however fast the machine; the re-run then finishes identically;
- signals: SIGINT, SIGTERM and SIGHUP once training has started: one line naming the signal, exit
  128 + signal, no traceback; the re-run finishes identically;
- two_writers: for lt-imp, lt-supermask, lt-early-bird and lt-export, a second run on the same folder started
  while the first trains (or writes its export), paused there with SIGSTOP so the two overlap on any machine:
  refused naming the first's PID; the first, continued, identical to a lone run;
- full_disk: the run directory on a 4 MB tmpfs (skipped where this process cannot mount one): a one-line
  error, nothing truncated outside ``.partial``, and the run completes once the disk has room.
"""
import collections
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ("kill_resume", "signals", "two_writers", "full_disk")
flags.DEFINE_list("scenarios", list(SCENARIOS), "Scenarios to run.")
flags.DEFINE_integer("train_steps", 200, "Iterations per round of the quick start.")
FLAGS = flags.FLAGS
# The uninterrupted runs every scenario must end like: binary name -> its run directory.
Reference = collections.namedtuple("Reference", ["dirs"])

# What compare_trees does not compare byte for byte, and why.
SKIPPED = {
    "events.out.tfevents": "TensorBoard logs stamp wall-clock time into every event",
    ".lock": "holds the writer's PID",
    "versions.json": "holds the command line, which names the folder",
    "saved_model.pb": "a SavedModel's graph names its functions with per-process counters (variables compared)",
    "fingerprint.pb": "hashes saved_model.pb",
}
# JSON keys that measure time, or the zipped size of a SavedModel (whose graph file varies as above).
VOLATILE_KEYS = ("wall_time", "seconds", "time_s", "ms_per", "zipped_bytes", "zip_ratio", "measured", "_ms")
EXPORT_DEPTH = 3  # lt-export writes <out>/model, <out>/model.report.json, <out>/model.tflite


def commands(out, reference=None):
    """Binary name -> its small command writing ``out`` (lt-export exports the reference lt-imp's last ticket)."""
    quick = [f"--train_steps={FLAGS.train_steps}", f"--eval_every={FLAGS.train_steps // 2}"]
    ticket = os.path.join(reference.dirs["imp"], "round_3", "ticket") if reference and "imp" in reference.dirs else None
    return {
        "imp": ["-m", "lt_keras.bin.imp", "--flagfile=flags/quickstart.flags", *quick, f"--output_dir={out}"],
        "supermask": ["-m", "lt_keras.bin.supermask", "--max_train_examples=600", "--epochs=4", "--batch_size=60",
                      "--optimizer=sgd", "--learning_rate=50", "--jit_compile=false", f"--output_dir={out}"],
        "early_bird": ["-m", "lt_keras.bin.early_bird", "--model=resnet20", "--max_train_examples=300", "--epochs=4",
                       "--batch_size=50", "--optimizer=sgd", "--learning_rate=0.05", "--queue_length=3",
                       "--epsilon=0.01", "--prune_ratios=0.5", "--nostop_at_eb", "--jit_compile=false",
                       f"--output_dir={out}"],
        "export": ["-m", "lt_keras.bin.export", f"--ticket_dir={ticket}", f"--saved_model_dir={out}/model",
                   "--tflite", "--max_train_examples=300"],
    }


# A file each binary writes once it is training (or, for lt-export, writing its scratch folder).
TRAINING = {"imp": "round_0.backup/round/chief/checkpoint", "supermask": "backup/chief/checkpoint",
            "early_bird": "backup_search/chief/checkpoint", "export": ".model.lt-export-*"}


def start(binary, out, reference=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # SIGINT back to its default: a shell starts background jobs with it ignored, and Python keeps that.
    return subprocess.Popen([sys.executable, *commands(out, reference)[binary]], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc, timeout=900):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(proc, folder, pattern, timeout=600):
    """Poll until ``folder/pattern`` exists (True) or the process ends first (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if glob.glob(os.path.join(folder, pattern)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _strip(value, folder):
    """A JSON value without its time measurements and with the run's own folder spelled as <run>."""
    if isinstance(value, dict):
        return {k: _strip(v, folder) for k, v in value.items() if not any(t in k for t in VOLATILE_KEYS)}
    if isinstance(value, list):
        return [_strip(v, folder) for v in value]
    return value.replace(folder, "<run>") if isinstance(value, str) else value


def _keras_members(path):
    """A .keras file's content: its config, its weights (h5 datasets) and metadata less the save date."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        out = {"config.json": json.loads(archive.read("config.json"))}
        meta = json.loads(archive.read("metadata.json"))
        meta.pop("date_saved", None)
        out["metadata.json"] = meta
        with tempfile.TemporaryDirectory() as tmp:
            archive.extract("model.weights.h5", tmp)
            with h5py.File(os.path.join(tmp, "model.weights.h5")) as f:
                arrays = {}
                f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                             else None)
        out["weights"] = arrays
    return out


def _same_value(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def compare_trees(a, b, skip=()):
    """None if the run folders ``a`` and ``b`` hold the same results, else the first difference. Every file is
    compared: JSON without time measurements, .npz arrays, .keras config and weights, the rest byte for byte,
    except SKIPPED and the names in ``skip``."""
    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names
                      if not any(s in f for s in SKIPPED) and f not in skip)

    names_a, names_b = files(a), files(b)
    if names_a != names_b:
        return f"files differ: {sorted(set(names_a) ^ set(names_b))[:5]}"
    for name in names_a:
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if name.endswith(".json"):
            same = _strip(json.load(open(pa)), a) == _strip(json.load(open(pb)), b)
        elif name.endswith(".npz"):
            with np.load(pa) as x, np.load(pb) as y:
                same = x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
        elif name.endswith(".keras"):
            same = _same_value(_keras_members(pa), _keras_members(pb))
        elif name == "flags.txt":
            same = open(pa).read().replace(a, "<run>") == open(pb).read().replace(b, "<run>")
        else:
            same = open(pa, "rb").read() == open(pb, "rb").read()
        if not same:
            return f"{name} differs"
    return None


def kill_resume(root, reference):
    out = os.path.join(root, "killed")
    # Points in the run's own progress: mid round 0, right after round 1, mid round 2, in round 3's control.
    moments = ["round_0.backup/round/chief/checkpoint", "round_1/metrics.json", "round_2.backup/round/chief/checkpoint",
               "round_3.backup/random_reinit/chief/checkpoint"]
    landed = []
    for moment in moments:
        proc = start("imp", out)
        if wait_for(proc, out, moment) and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            landed.append(moment)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    code, _, err = finish(start("imp", out))
    problem = f"exit {code}: {err[-300:]}" if code else compare_trees(out, reference.dirs["imp"])
    observed = f"{len(landed)} of {len(moments)} kills landed; resumed: {problem or 'identical'}"
    return "a kill at every planned moment; identical run folder", observed, (
        len(landed) == len(moments) and problem is None)


def signals(root, reference):
    results, ok = [], True
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        out = os.path.join(root, f"signal_{signum}")
        proc = start("imp", out)
        if not wait_for(proc, out, TRAINING["imp"]):
            finish(proc)
            results.append(f"{signal.Signals(signum).name}: ended before training")
            ok = False
            continue
        sent = time.time()
        os.killpg(proc.pid, signum)
        code, _, err = finish(proc)
        took = time.time() - sent
        lines = [line for line in err.splitlines() if line.startswith("lt-imp:")]
        expected = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        one_line = bool(lines) and expected in lines[-1] and "resume" in lines[-1] and "Traceback" not in err
        code2, _, err2 = finish(start("imp", out))
        problem = f"re-run exit {code2}" if code2 else compare_trees(out, reference.dirs["imp"])
        ok &= code == 128 + signum and one_line and problem is None
        results.append(f"{signal.Signals(signum).name}: exit {code} in {took:.1f} s, "
                       f"{lines[-1] if lines else err[-120:]!r}, re-run {problem or 'identical'}")
    return "one line naming the signal, exit 128 + signal, identical after re-run", "; ".join(results), ok


def two_writers(root, reference):
    results, ok = [], True
    for binary in ("imp", "supermask", "early_bird", "export"):
        out = os.path.join(root, f"shared_{binary}")
        first = start(binary, out, reference)
        if not wait_for(first, out, TRAINING[binary]):
            finish(first)
            results.append(f"{binary}: the first run ended before its mid point")
            ok = False
            continue
        os.killpg(first.pid, signal.SIGSTOP)  # paused mid-way, holding its lock, however fast the machine
        second = start(binary, out, reference)
        code2, _, err2 = finish(second)
        os.killpg(first.pid, signal.SIGCONT)
        code1, _, err1 = finish(first)
        named = f"(process {first.pid})" in err2 and "Traceback" not in err2  # it ran while the first held the lock
        problem = f"first exit {code1}: {err1[-200:]}" if code1 else compare_trees(out, reference.dirs[binary])
        ok &= code2 != 0 and named and problem is None
        refusal = err2.strip().splitlines()[-1] if err2.strip() else "-"
        results.append(f"{binary}: second exit {code2} ({refusal[:90]!r}), first {problem or 'identical'}")
    return "the second refused naming the first's PID; the first identical to a lone run", "; ".join(results), ok


def full_disk(root, reference):
    mount = os.path.join(root, "tmpfs")
    os.makedirs(mount)
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], stderr=subprocess.DEVNULL):
        return "one-line error, completes with room", "skipped: cannot mount a tmpfs here (needs root)", None
    try:
        out = os.path.join(mount, "run")
        code, _, err = finish(start("imp", out))
        message = [line for line in err.splitlines() if "lt-imp:" in line]
        one_line = code != 0 and bool(message) and "disk is full" in message[-1] and "Traceback" not in err
        complete = all(os.path.exists(os.path.join(out, name, "metrics.json"))
                       for name in os.listdir(out) if name.startswith("round_") and "." not in name)
        moved = os.path.join(root, "after_full_disk")
        shutil.copytree(out, moved)
    finally:
        subprocess.call(["umount", mount])
    code2, _, err2 = finish(start("imp", moved))
    problem = f"re-run exit {code2}: {err2[-300:]}" if code2 else compare_trees(moved, reference.dirs["imp"])
    observed = (f"exit {code}: {message[-1] if message else err[-200:]!r}; finished rounds complete: {complete}; "
                f"resumed with room: {problem or 'identical'}")
    return "one-line error, no truncated round, completes with room", observed, one_line and complete and not problem


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.scenarios) - set(SCENARIOS))
    if unknown:
        sys.exit(f"chaos: error: --scenarios: unknown {unknown}; choose from {list(SCENARIOS)}.")
    with tempfile.TemporaryDirectory(prefix="lt_chaos_") as root:
        reference = Reference({})
        for binary in ("imp", "supermask", "early_bird", "export"):  # export takes the lt-imp run's ticket
            print(f"reference: one uninterrupted {binary} run ...", flush=True)
            folder = os.path.join(root, f"reference_{binary}")
            code, _, err = finish(start(binary, folder, reference))
            if code:
                sys.exit(f"chaos: error: the uninterrupted {binary} run failed:\n{err[-2000:]}")
            reference.dirs[binary] = folder
        rows = []
        for name in FLAGS.scenarios:
            began = time.time()
            expected, observed, ok = globals()[name](root, reference)
            rows.append((name, expected, observed, ok, time.time() - began))
            print(f"{name}: {'pass' if ok else 'skipped' if ok is None else 'FAIL'} ({rows[-1][4]:.0f} s)", flush=True)
    print("\n| scenario | expected | observed | pass |\n|---|---|---|---|")
    for name, expected, observed, ok, _ in rows:
        print(f"| {name} | {expected} | {observed} | {'yes' if ok else 'skipped' if ok is None else '**NO**'} |")
    print("\nNot compared: " + "; ".join(f"{k} ({why})" for k, why in SKIPPED.items()) +
          f"; JSON keys {list(VOLATILE_KEYS)}; .keras files by config and weights (their metadata dates the save).")
    if any(ok is False for *_, ok, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
