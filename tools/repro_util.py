"""Helpers shared by the reproduction scripts under tools/: running binaries and passing data flags."""
import json
import os
import subprocess
import sys

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_data_flags(default_dataset_folder):
    flags.DEFINE_string("data_dir", None, f"Folder with the official {default_dataset_folder} files.")
    flags.DEFINE_list("data_flags", [], "Extra data flags for every run instead of --data_dir, e.g. "
                      "--data_flags=--dataset=mnist_5k,--validation_size=500 (quick checks on embedded data).")


def data_args(script):
    """The data flags every run of ``script`` gets; exits with a clear message when there are none."""
    values = flags.FLAGS
    if values.data_dir:
        if not os.path.isdir(values.data_dir):
            sys.exit(f"{script}: error: --data_dir {values.data_dir!r} is not a directory.")
        return [f"--data_dir={os.path.abspath(values.data_dir)}", *values.data_flags]
    if values.data_flags:
        return list(values.data_flags)
    sys.exit(f"{script}: error: give --data_dir (the dataset's official files) or --data_flags.")


def define_shard_flag():
    flags.DEFINE_string("shard", None, "i/n: train only every n-th unit (seed or chain) starting at the i-th "
                        "(0 <= i < n), so n machines split one reproduction without coordination (each run "
                        "directory has its own lock); the report is written once every unit is complete.")


def shard_of(script, units):
    """The units this process trains under ``--shard=i/n`` (all without it), in order."""
    text = flags.FLAGS.shard
    if not text:
        return list(units)
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        sys.exit(f"{script}: error: --shard: expected i/n with 0 <= i < n, got {text!r}.")
    return [u for k, u in enumerate(units) if k % int(count) == int(index)]


def run_module(script, module, args):
    command = [sys.executable, "-m", module, *args]
    print("running:", " ".join(command[2:]), flush=True)
    if subprocess.call(command, cwd=REPO) != 0:
        sys.exit(f"{script}: error: {module} failed (see above); re-run the same command to resume.")


def relative_arg(arg):
    """A flag whose value is an absolute path, shown relative to the repository (docs name no machine paths)."""
    name, sep, value = arg.partition("=")
    return f"{name}={os.path.relpath(value, REPO)}" if sep and os.path.isabs(value) else arg


def command_line():
    """This driver's command as the docs show it: ``python tools/<script> <flags>``, paths relative."""
    return " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO), *map(relative_arg, sys.argv[1:])])


def write_reproduction(folder, record, text):
    """A driver's results, atomically: ``reproduction.json`` (``record``) and ``reproduction.md`` (``text``)."""
    from lt_keras.io_utils import atomic_write_json, atomic_write_text

    folder = os.path.join(REPO, folder)
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(os.path.join(folder, "reproduction.json"), record)
    atomic_write_text(os.path.join(folder, "reproduction.md"), text)


def pct(v, unit=""):
    """A fraction as a percentage with two decimals (then ``unit``); "-" for a number not measured yet."""
    return "-" if v is None else f"{100 * v:.2f}{unit}"


def checks_table(rows):
    """The markdown table of ``(claim, measured, needed, met)`` checks, a miss in bold."""
    return ["| target | measured | needed | met |", "|---|---|---|---|"] + [
        f"| {c} | {m} | {t} | {'yes' if ok else '**MISSED**'} |" for c, m, t, ok in rows]


def checks_json(rows):
    """The ``(claim, measured, needed, met)`` checks as reproduction.json records them."""
    return [{"claim": c, "measured": m, "target": t, "met": ok} for c, m, t, ok in rows]


def load_json(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return json.load(f)


def merge_report(old_text, sections):
    """The report's sections after a run of some steps: ``sections`` (full "## title" texts) replace the old
    sections of the same title, in place; every other old section stays; new ones are appended. A run of one
    step must not erase the others' results (their run directories may be gone)."""
    def title(text):
        return text.split("\n", 1)[0]

    new = {title(s): s for s in sections}
    old = ["## " + part for part in old_text.split("\n## ")[1:]] if old_text else []
    merged = [new.pop(title(s), s if s.endswith("\n") else s + "\n") for s in old]
    return merged + [s for s in sections if title(s) in new]


def mean_rounds(per_seed):
    """Rounds averaged over seeds (the rounds every seed has): every number the mean, its standard deviation in
    ``spread`` and the seeds' values in ``seeds``, nested as the rounds nest them (``controls``)."""
    import numpy as np

    def numbers(values):
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

    def fold(values, how):
        if all(isinstance(v, dict) for v in values):
            keys = [k for k in values[0] if all(k in v for v in values)]
            folded = {k: fold([v[k] for v in values], how) for k in keys}
            return {k: v for k, v in folded.items() if v is not None} if how != "mean" else folded
        if numbers(values):
            mean = values[0] if len(set(values)) == 1 else float(np.mean(values))  # a round number stays an int
            return {"mean": mean, "spread": float(np.std(values)), "seeds": list(values)}[how]
        return values[0] if how == "mean" else None

    out = []
    for k in range(min(len(r) for r in per_seed)):
        values = [r[k] for r in per_seed]
        out.append(dict(fold(values, "mean"), spread=fold(values, "spread"), seeds=fold(values, "seeds")))
    return out


def pct_pm(entry, *path):
    """``pct`` of the number at ``path`` in a round, with +- its spread over seeds where averaged."""
    value, spread = entry, entry.get("spread", {})
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
        spread = spread.get(key) if isinstance(spread, dict) else None
    return pct(value) + (f" ± {100 * spread:.2f}" if isinstance(spread, float) else "")
