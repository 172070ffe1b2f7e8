"""Learned supermasks on the full CIFAR-10 (Zhou et al. 2019; edge-popup, Ramanujan et al. 2020), resumable.

    bash tools/env.sh python tools/reproduce_supermask_cifar.py \
        --data_dir=../shared/data/cifar10_full/cifar-10-batches-py --runs=conv4_glorot

Each run of ``--runs`` is one ``lt-supermask`` run directory under ``--output_dir``, trained in turn;
re-running resumes the unfinished one and skips the finished ones:

- ``conv{2,4,6}_{glorot,signed_constant}``: the Bernoulli supermask with Zhou's optimizer (SGD lr 100,
  momentum 0.9, batch 250, 200 epochs: flags/conv4_cifar10_supermask.flags with ``--model`` and
  ``--weight_init``); the signed-constant runs with ``--dynamic_weight_rescaling``, the recipe of the
  paper's learned-supermask numbers (its code's ``--signed_constant --dynamic_scaling``), which the table
  shows beside them;
- ``conv{4,6}_edgepopup``: the top-k supermask of flags/conv6_cifar10_edgepopup.flags (100 epochs).

Each is a day or more of 2 CPU cores (Conv-4: 5-15 minutes an epoch). The Bernoulli runs keep the rate
constant, so an unfinished run's accuracy at epoch k is that of a k-epoch budget: ``--report_only``
reports every run as far as it got (from its TensorBoard log) while another process trains it.

Writes ``reproduction.md`` / ``reproduction.json``: per run the budget (epochs, iterations, wall time),
the test accuracy (at the end: the mean over ``--eval_samples`` sampled masks; unfinished: the last
epoch's evaluation, masks sampled per batch), the paper's number, and the targets (Conv-4 >= 65%,
Conv-6 >= 70%, the better Bernoulli run of each). ``tools/reproduce.py --steps=supermask_full`` runs it.

``--record`` keeps, in a file that lives with the repository, each run's furthest state reported: run folders
of a day-long run may be lost (a new checkout has no ``runs/``) and a report must not then forget a measured
epoch. A run whose folder is behind its record, or gone, is reported from the record, marked as such.
"""
import datetime
import glob
import os
import sys

from absl import app, flags

from repro_util import (REPO, checks_json, checks_table, command_line, data_args, define_data_flags, load_json,
                        pct, run_module, write_reproduction)

BERNOULLI, TOPK = "flags/conv4_cifar10_supermask.flags", "flags/conv6_cifar10_edgepopup.flags"
INITS = {"signed_constant": ["--weight_init=signed_constant", "--dynamic_weight_rescaling"],  # run name part ->
         "glorot": ["--weight_init=glorot_normal"]}  # its flags; the paper's recipe first
RUNS = {  # name -> (net, flagfile, extra flags), in the order the default trains them
    **{f"{net}_{init}": (net, BERNOULLI, [f"--model={net}", *INITS[init]])
       for init in INITS for net in ("conv6", "conv4", "conv2")},
    **{f"{net}_edgepopup": (net, TOPK, [f"--model={net}"]) for net in ("conv4", "conv6")},
}
ZHOU = {"conv2": 0.660, "conv4": 0.725, "conv6": 0.765}  # learned supermasks (signed constant + DWR), CIFAR-10
TARGETS = {"conv4": 0.65, "conv6": 0.70}

define_data_flags("CIFAR-10 (cifar-10-batches-py, all five training batches)")
flags.DEFINE_string("output_dir", "runs/repro_supermask_cifar", "Folder of all the runs.")
flags.DEFINE_list("runs", list(RUNS), "Which runs, trained in this order: " + ", ".join(RUNS) + ".")
flags.DEFINE_list("run_flags", [], "Extra flags for every run (the quick pipeline check shrinks the budget).")
flags.DEFINE_bool("report_only", False, "Train nothing; report every run as far as it got.")
flags.DEFINE_string("record", "", "JSON file of each run's furthest state reported, updated by every report "
                    "(tools/reproduce.py keeps docs/results/supermask_cifar_record.json); a run whose folder is "
                    "behind it or gone is reported from it. Empty: none.")
FLAGS = flags.FLAGS


def progress(run_dir):
    """How far an unfinished run got, from its TensorBoard log (the only per-epoch record before the end):
    epochs done, the last epoch's test accuracy, iterations, and the seconds its processes trained."""
    import tensorflow as tf

    accuracy, evaluated, seconds = {}, set(), 0.0
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "*", "events.out.tfevents.*"))):
        times = []
        for event in tf.compat.v1.train.summary_iterator(path):
            times.append(event.wall_time)
            for value in event.summary.value:
                if value.tag == "epoch_test_accuracy":
                    accuracy[event.step] = float(tf.make_ndarray(value.tensor))
                elif value.tag == "evaluation_accuracy_vs_iterations":
                    evaluated.add(event.step)
        if os.path.basename(os.path.dirname(path)) == "train" and times:
            seconds += max(times) - min(times)
    if not accuracy:
        return None
    # Keras epoch k is the k-th evaluation interval; the validation log may already hold the next one's step.
    evaluated = sorted(evaluated)
    iterations = evaluated[max(accuracy)] if len(evaluated) > max(accuracy) else max(evaluated, default=0)
    return {"epochs_done": max(accuracy) + 1, "test_accuracy": accuracy[max(accuracy)], "iterations": iterations,
            "wall_time_s": seconds}


def row(name):
    """One run's line of the table: finished (its summary), unfinished (its TensorBoard log) or not started."""
    net, flagfile, _ = RUNS[name]
    out = os.path.join(REPO, FLAGS.output_dir, name)
    base = {"run": name, "net": net, "estimator": "topk" if flagfile == TOPK else "bernoulli", "paper": ZHOU[net]
            if name.endswith("_signed_constant") else None}
    if os.path.exists(os.path.join(out, "summary.json")):
        summary, config = load_json(out, "summary.json"), load_json(out, "config.json")
        return {**base, "status": "finished", "epochs_done": config["train"]["epochs"],
                "epochs_planned": config["train"]["epochs"], "iterations": summary["total_steps"],
                "wall_time_s": summary["wall_time_s"], "test_accuracy": summary["test_accuracy"],
                "ticket_density": summary["ticket_density"]}
    seen = progress(out) if os.path.exists(os.path.join(out, "config.json")) else None
    if seen is None:
        return {**base, "status": "not started"}
    return {**base, "status": "unfinished", "epochs_planned": load_json(out, "config.json")["train"]["epochs"],
            **seen}


def _progress_key(r):
    return r["status"] == "finished", r.get("epochs_done") or 0, r.get("iterations") or 0


def with_record(rows, path):
    """Each row or its recorded state, whichever got further (a tie keeps the run folder's); the record then
    holds the rows shown. A recorded row shown says the date it was reported ("recorded")."""
    from lt_keras.io_utils import atomic_write_json

    path = os.path.join(REPO, path)
    record = load_json(path) if os.path.exists(path) else {}
    today = datetime.date.today().isoformat()
    shown = []
    for r in rows:
        old = record.get(r["run"])
        if old is not None and _progress_key(old) > _progress_key(r):
            shown.append(old)
        else:
            shown.append(r)
            if r["status"] != "not started":
                record[r["run"]] = {**r, "recorded": today}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_json(path, record)
    return shown


def checks(rows):
    """Conv-4 >= 65% and Conv-6 >= 70% on the better Bernoulli run of each net measured so far."""
    out = []
    for net, needed in TARGETS.items():
        measured = [r for r in rows if r["net"] == net and r["estimator"] == "bernoulli" and "test_accuracy" in r]
        if measured:
            best = max(measured, key=lambda r: r["test_accuracy"])
            where = "at the end" if best["status"] == "finished" else f"epoch {best['epochs_done']:g}, unfinished"
            out.append((f"learned supermask {net.replace('conv', 'Conv-')} >= {100 * needed:g}%",
                        f"{pct(best['test_accuracy'])}% ({best['run']}, {where})", f">= {100 * needed:g}%",
                        best["test_accuracy"] >= needed))
    return out


def _g(epochs):
    return "-" if epochs is None else f"{epochs:g}"  # None: a run budgeted in --train_steps


def _duration(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def markdown(rows, checks_, command):
    lines = [f"Command: `{command}`", "",
             "Test accuracy of a finished Bernoulli run: "
             "the mean over its sampled masks at the end; of an unfinished one: its last epoch's evaluation (masks "
             "sampled per batch; the rate is constant, so this is the accuracy of that budget).", "",
             "| run | status | epochs | iterations | wall time | test accuracy (%) | paper (Zhou et al., signed "
             "constant + dynamic weight rescaling, %) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "not started":
            lines.append(f"| {r['run']} | not started | - | - | - | - | {pct(r['paper'])} |")
            continue
        status = f"{r['status']}, recorded {r['recorded']} (run folder behind or gone)" if "recorded" in r \
            else r["status"]
        lines.append(f"| {r['run']} | {status} | {_g(r['epochs_done'])} of {_g(r['epochs_planned'])} | "
                     f"{r['iterations']:,} | {_duration(r['wall_time_s'])} | {pct(r['test_accuracy'])} | "
                     f"{pct(r['paper'])} |")
    judged = {r["net"] for r in rows if r["estimator"] == "bernoulli" and "test_accuracy" in r}
    missing = [net for net in TARGETS if net not in judged]  # the nets checks() found nothing to judge
    lines += ["", *checks_table(checks_)] if checks_ else [""]
    if missing:
        lines += ["", "Not measured yet: " + ", ".join(f"{n.replace('conv', 'Conv-')} (target >= "
                                                        f"{100 * TARGETS[n]:g}%)" for n in missing) + "."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.runs) - set(RUNS))
    if unknown or not FLAGS.runs:
        sys.exit(f"reproduce_supermask_cifar: error: --runs: {unknown or 'empty'}; choose from {list(RUNS)}.")
    if not FLAGS.report_only:
        data = data_args("reproduce_supermask_cifar")
        for name in FLAGS.runs:
            _, flagfile, extra = RUNS[name]
            run_module("reproduce_supermask_cifar", "lt_keras.bin.supermask",
                       [f"--flagfile={flagfile}", *data, *extra, *FLAGS.run_flags,
                        f"--output_dir={os.path.join(FLAGS.output_dir, name)}"])
    rows = [row(name) for name in FLAGS.runs]
    if FLAGS.record:
        rows = with_record(rows, FLAGS.record)
    found = checks(rows)
    text = markdown(rows, found, command_line())
    write_reproduction(FLAGS.output_dir, {
        "runs": rows, "checks": checks_json(found)}, text)
    print(text)


if __name__ == "__main__":
    app.run(main)
