"""Check that a refactoring changed no result: the same binaries, seeds and flags on two source trees.

    bash tools/env.sh python tools/equivalence.py --tree=/path/to/old/checkout --result=/tmp/eq_old
    bash tools/env.sh python tools/equivalence.py --result=/tmp/eq_new          # this checkout
    bash tools/env.sh python tools/equivalence.py --compare=/tmp/eq_old,/tmp/eq_new

Each ``--result`` run executes SCENARIOS (small runs of every binary: IMP
with controls, a ``step:K`` rewind, a ``signed_reinit`` +
``freeze_init_zero_mask`` chain, Bernoulli and top-k supermasks, an
Early-Bird search, lt-retrain and lt-export of the first IMP run's ticket)
in one fixed scratch folder, so that every path a run records is the same on
both trees, then moves the folder to ``--result``. ``--compare`` compares
the two results file by file with ``chaos.compare_trees`` (masks, weights,
metrics; time measurements and wall-clock stamps excepted; ``flags.txt`` as
a set of flags, see RESOLVED_FLAGS; ``summary.json`` may add
ADDED_SUMMARY_KEYS) and exits non-zero on the first
difference of any scenario. About 5 minutes a tree on
2 cores.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from chaos import _strip, compare_trees
from lt_keras.runs import ADDED_LATER, run_identity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("tree", REPO, "Source tree whose binaries run (a checkout of lt_keras).")
flags.DEFINE_string("result", None, "Folder that receives the scenarios' run directories (must not exist).")
flags.DEFINE_list("compare", None, "Two --result folders to compare.")
FLAGS = flags.FLAGS

_SCRATCH = os.path.join(tempfile.gettempdir(), "lt_keras_equivalence", "run")
_IMP = ["-m", "lt_keras.bin.imp", "--flagfile=flags/quickstart.flags", "--train_steps=40", "--eval_every=20",
        "--rounds=2", "--max_train_examples=600"]
_SUPERMASK = ["-m", "lt_keras.bin.supermask", "--epochs=1", "--max_train_examples=500", "--jit_compile=false",
              "--optimizer=sgd", "--learning_rate=50", "--batch_size=100", "--eval_samples=3", "--eval_every=2"]
_TICKET = os.path.join(_SCRATCH, "imp_controls", "round_2", "ticket")
# Scenario -> its command (run in this order: retrain and export take imp_controls' last ticket).
SCENARIOS = {
    "imp_controls": _IMP,
    "imp_late_rewind": [*_IMP, "--rewind=step:10", "--controls="],
    "imp_signed_reinit_freeze_init_zero_mask": [*_IMP, "--mask1=signed_reinit", "--mask0=freeze_init_zero_mask",
                                                "--controls="],
    "supermask_bernoulli": [*_SUPERMASK, "--estimator=bernoulli"],
    "supermask_topk": [*_SUPERMASK, "--estimator=topk", "--keep_fraction=0.3",
                       "--weight_init=signed_kaiming_constant"],
    "early_bird": ["-m", "lt_keras.bin.early_bird", "--model=resnet20", "--epochs=3", "--batch_size=50",
                   "--optimizer=sgd", "--learning_rate=0.05", "--queue_length=2", "--epsilon=0.5",
                   "--prune_ratios=0.5", "--nojit_compile", "--max_train_examples=200", "--validation_size=100"],
    "retrain": ["-m", "lt_keras.bin.retrain", f"--ticket_dir={_TICKET}", "--train_steps=20", "--eval_every=10",
                "--nojit_compile", "--max_train_examples=600"],
    "export": ["-m", "lt_keras.bin.export", f"--ticket_dir={_TICKET}", "--max_train_examples=600"],
}


def run_scenarios(tree, result):
    if os.path.exists(result):
        sys.exit(f"equivalence: error: --result {result} exists; name a new folder.")
    shutil.rmtree(_SCRATCH, ignore_errors=True)
    os.makedirs(_SCRATCH)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=tree)
    for i, (name, command) in enumerate(SCENARIOS.items()):
        out = os.path.join(_SCRATCH, name)
        where = [f"--saved_model_dir={out}/model"] if name == "export" else [f"--output_dir={out}"]
        began = time.time()
        done = subprocess.run([sys.executable, *command, *where], cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"equivalence: error: {name} failed in {tree}:\n{done.stderr[-3000:]}")
        print(f"[{i + 1}/{len(SCENARIOS)}] {name}: {time.time() - began:.0f} s", flush=True)
    shutil.move(_SCRATCH, result)
    print(f"results of {tree} in {result}")


# Operative flags a newer tree writes that an older one left unset, with the value the older one resolved them
# to: the same run.
RESOLVED_FLAGS = {"retrain_ratios": "EarlyBirdConfig fills it from prune_ratios; flags.txt is written from the "
                                    "configs since the methods floor"}


def _flags(path):
    if not os.path.exists(path):
        return None
    lines = [line.strip() for line in open(path) if line.strip() and not line.startswith("#")]
    return dict(line.lstrip("-").split("=", 1) if "=" in line else (line.lstrip("-"), "") for line in lines)


# Flags an older tree wrote that a newer one moved elsewhere: left out unset, the same run (set, the flag they
# moved to differs unless it says the same).
MOVED_FLAGS = {"lr_decay_epochs": "Early-Bird's decay points are the schedule's --lr_decay_steps in epochs since "
                                  "the one time unit (lt_keras.duration)"}


def _flag_difference(a, b):
    """None if two flags.txt set the same flags (in any order; flags in RESOLVED_FLAGS may be added, so may a
    setting added later at the value older runs computed with (``runs.ADDED_LATER``); unset flags in
    MOVED_FLAGS may be dropped)."""
    old, new = _flags(os.path.join(a, "flags.txt")), _flags(os.path.join(b, "flags.txt"))
    if old == new:
        return None
    if old is None or new is None:
        return "flags.txt exists in one only"
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                     and not (k not in old and k in RESOLVED_FLAGS) and not (k in MOVED_FLAGS and not old.get(k))
                     and not (k not in old and k in ADDED_LATER and new[k] == str(ADDED_LATER[k])))
    return f"flags.txt differs in {changed}" if changed else None


# Keys a newer tree's summary.json holds that an older one's lacked (every summary's common keys since the
# methods floor): an addition, not a changed result.
ADDED_SUMMARY_KEYS = ("model", "dataset", "data_source", "search_precision", "strategy", "replicas")


def _summary_difference(a, b):
    paths = [os.path.join(x, "summary.json") for x in (a, b)]
    if not all(os.path.exists(p) for p in paths):
        return None if not any(os.path.exists(p) for p in paths) else "summary.json exists in one only"
    old, new = (_strip(json.load(open(p)), x) for p, x in zip(paths, (a, b)))
    new = {k: v for k, v in new.items() if k in old or k not in ADDED_SUMMARY_KEYS}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"summary.json differs in {changed}" if changed else None


def _config_difference(a, b):
    """None if two config.json are the same run as a run directory judges it (``runs.run_identity``: settings added
    later or moved read as the older run's)."""
    paths = [os.path.join(x, "config.json") for x in (a, b)]
    if not all(os.path.exists(p) for p in paths):
        return None if not any(os.path.exists(p) for p in paths) else "config.json exists in one only"
    old, new = (run_identity(json.load(open(p))) for p in paths)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"config.json differs in {changed}" if changed else None


def compare(a, b):
    differences = 0
    for name in SCENARIOS:
        left, right = os.path.join(a, name), os.path.join(b, name)
        difference = (compare_trees(left, right, skip=("flags.txt", "summary.json", "config.json"))
                      or _flag_difference(left, right) or _summary_difference(left, right)
                      or _config_difference(left, right))
        differences += difference is not None
        print(f"{name}: {'same' if difference is None else 'DIFFERENT: ' + difference}")
    if differences:
        sys.exit(f"equivalence: {differences} of {len(SCENARIOS)} scenarios differ.")
    print(f"all {len(SCENARIOS)} scenarios give the same masks, weights and metrics.")


def main(argv):
    del argv
    if FLAGS.compare:
        if len(FLAGS.compare) != 2:
            sys.exit("equivalence: error: --compare takes two folders, A,B.")
        compare(*FLAGS.compare)
    elif FLAGS.result:
        run_scenarios(os.path.abspath(FLAGS.tree), os.path.abspath(FLAGS.result))
    else:
        sys.exit("equivalence: error: give --result (run the scenarios) or --compare=A,B.")


if __name__ == "__main__":
    app.run(main)
