"""The training-recipe claims of the seed papers on the full CIFAR-10, at a 2-core scale (resumable).

    bash tools/env.sh python tools/reproduce_recipes.py \
        --data_dir=../shared/data/cifar10_full/cifar-10-batches-py

Three comparisons (``--parts``), each a pair of runs of the library's binaries under ``--output_dir``;
re-running resumes every unfinished run and skips the finished ones:

1. ``augment``: dense VGG-11-BN (quarter widths) with the Early-Bird recipe,
   flags/vgg11_cifar10_full_dense_cpu.flags, with pad-4 crop + flip and without (``lt-train``).
   Target: with >= without + 2 pp (test accuracy at the end).
2. ``schedule`` (You et al. 2020): Early-Bird tickets at p = 0.5 drawn under the rate decayed late
   (epochs 40 and 60 of 80, the paper's [80, 120] of 160) and from the start (epochs 0 and 50: the
   paper's [0, 100], i.e. rate 0.01 from the first step): two ``lt-early-bird`` searches that stop at
   the ticket, then both tickets retrained the same way, from their EB weights for the full dense
   schedule (``lt-retrain``, the dense flagfile). Target: late >= early.
3. ``warmup`` (Frankle & Carbin 2019, section 4): ResNet-20 with its convolutions pruned once to
   ``--warmup_density`` (the output layer dense, as in the paper), the ticket against its random
   reinit, at rate 0.1 without warmup (flags/resnet20_cifar10_imp.flags) and at 0.03 with warmup
   (..._warmup.flags), for
   ``--resnet_steps`` iterations instead of 30K with the decay points and the warmup scaled alike
   (``lt-imp --rounds=1``). Targets: with warmup the ticket beats its reinit, by more than
   without warmup.

Writes ``reproduction.json`` and ``reproduction.md`` (tables and checks, met or MISSED) into
``--output_dir``; ``tools/reproduce.py --steps=recipes`` runs it and copies the tables into
docs/RESULTS.md. ``--vgg_flags`` / ``--resnet_flags`` append flags to the VGG / ResNet runs (the
quick pipeline check shrinks the budgets with them), ``--eb_flags`` to the two searches.
"""
import os
import sys

from absl import app, flags

from repro_util import (checks_json, checks_table, command_line, data_args, define_data_flags, load_json, pct,
                        run_module, write_reproduction)

define_data_flags("CIFAR-10 (cifar-10-batches-py)")
flags.DEFINE_string("output_dir", "runs/repro_recipes", "Folder of all the runs.")
PARTS = ("augment", "schedule", "warmup")
flags.DEFINE_list("parts", list(PARTS), "Which comparisons to run and report.")
flags.DEFINE_integer("resnet_steps", 3000, "Iterations per ResNet-20 training (the paper: 30,000).", lower_bound=6)
flags.DEFINE_float("warmup_density", 0.2, "Fraction of the convolution weights the one-shot ResNet-20 ticket keeps.")
flags.DEFINE_list("vgg_flags", [], "Extra flags for every VGG-11 run (lt-train, lt-early-bird, lt-retrain).")
flags.DEFINE_list("eb_flags", [], "Extra flags for the two Early-Bird searches (after --vgg_flags).")
flags.DEFINE_list("resnet_flags", [], "Extra flags for both ResNet-20 runs (lt-imp).")
FLAGS = flags.FLAGS

DENSE_FLAGS = "flags/vgg11_cifar10_full_dense_cpu.flags"
EB_FLAGS = "flags/vgg11_cifar10_full_eb_cpu.flags"
SCHEDULES = {"late": "40,60", "early": "0,50"}  # decay epochs of 80 (the paper: [80, 120] and [0, 100] of 160)
RATIO = 0.5


def _run(module, args):
    run_module("reproduce_recipes", module, args)


def _out(*parts):
    return os.path.join(FLAGS.output_dir, *parts)


def augment(data):
    """Final and early-stop test accuracy of the dense net with and without crop + flip."""
    rows = {}
    for mode in ("crop_flip", "none"):
        _run("lt_keras.bin.train", [f"--flagfile={DENSE_FLAGS}", *data, f"--augment={mode}", *FLAGS.vgg_flags,
                                    f"--output_dir={_out('augment_' + mode)}"])
        rows[mode] = load_json(_out("augment_" + mode), "summary.json")
    gap = rows["crop_flip"]["final_test_accuracy"] - rows["none"]["final_test_accuracy"]
    check = ("dense VGG-11-BN: crop + flip >= none + 2 pp (end)", f"{100 * gap:+.2f} pp", ">= +2.00 pp", gap >= 0.02)
    return rows, [check]


def schedule(data):
    """EB epoch and retrained accuracy of the p = 0.5 ticket drawn under each schedule."""
    rows = {}
    for name, decay in SCHEDULES.items():
        search = _out(f"schedule_{name}", "search")
        _run("lt_keras.bin.early_bird", [f"--flagfile={EB_FLAGS}", *data, f"--prune_ratios={RATIO}",
                                         "--retrain_ratios=", "--norun_baseline",
                                         "--lr_decay_steps=" + ",".join(f"{e}ep" for e in decay.split(",")),
                                         *FLAGS.vgg_flags, *FLAGS.eb_flags, f"--output_dir={search}"])
        searched = load_json(search, "summary.json")
        found = searched["ratios"][str(RATIO)]
        if not found["emerged"]:
            sys.exit(f"reproduce_recipes: error: no Early-Bird ticket at p = {RATIO} under decay at epochs {decay} "
                     f"(see {search}); nothing to retrain.")
        _run("lt_keras.bin.retrain", [f"--flagfile={DENSE_FLAGS}", *data, f"--ticket_dir={search}/eb_p{RATIO}/ticket",
                                      *FLAGS.vgg_flags, f"--output_dir={_out(f'schedule_{name}', 'retrain')}"])
        rows[name] = {"decay_epochs": decay, "eb_epoch": found["eb_epoch"], "parameters": found["ticket_parameters"],
                      "schedule_epochs": searched["schedule_epochs"],
                      **load_json(_out(f"schedule_{name}", "retrain"), "summary.json")}
    gap = rows["late"]["final_test_accuracy"] - rows["early"]["final_test_accuracy"]
    check = (f"EB ticket p = {RATIO}: late decay >= decay from the start, retrained alike (end)",
             f"{100 * gap:+.2f} pp", ">= 0", gap >= 0)
    return rows, [check]


def warmup(data):
    """Ticket and random reinit at ``--warmup_density``, without and with warmup (early-stop test accuracy)."""
    steps = FLAGS.resnet_steps
    rows = {}
    for name, flagfile, extra in (("without", "resnet20_cifar10_imp.flags", []),
                                  ("with", "resnet20_cifar10_imp_warmup.flags",
                                   [f"--warmup_steps={round(steps * 20 / 30)}"])):  # 20K of 30K
        out = _out(f"warmup_{name}")
        _run("lt_keras.bin.imp", [f"--flagfile=flags/{flagfile}", *data, f"--train_steps={steps}",
                                  f"--eval_every={max(1, steps // 10)}",
                                  f"--lr_decay_steps={round(steps * 20 / 30)},{round(steps * 25 / 30)}",  # 20K, 25K
                                  *extra, "--rounds=1", f"--prune_rate_conv={1 - FLAGS.warmup_density:g}",
                                  "--controls=random_reinit", *FLAGS.resnet_flags, f"--output_dir={out}"])
        dense, ticket = load_json(out, "summary.json")["rounds"][:2]
        reinit = ticket["controls"]["random_reinit"]
        rows[name] = {"dense": dense, "ticket": ticket, "reinit": reinit,
                      "gap": ticket["early_stop_test_accuracy"] - reinit["early_stop_test_accuracy"]}
    gaps = rows["with"]["gap"], rows["without"]["gap"]
    checks = [("with warmup: ticket > random reinit (early stop)", f"{100 * gaps[0]:+.2f} pp", "> 0", gaps[0] > 0),
              ("the ticket's lead over reinit larger with warmup than without", f"{100 * gaps[0]:+.2f} vs "
               f"{100 * gaps[1]:+.2f} pp", "with > without", gaps[0] > gaps[1])]
    return rows, checks


RUNS = {"augment": augment, "schedule": schedule, "warmup": warmup}


def markdown(results, checks, command):
    lines = [f"Command: `{command}`", ""]
    if "augment" in results:
        rows = results["augment"]
        lines += [f"**Augmentation**: dense VGG-11-BN (quarter widths), {DENSE_FLAGS}, "
                  f"{rows['none']['total_steps']:,} iterations each.", "",
                  "| augment | test @ end | test @ early stop | wall time |", "|---|---|---|---|"]
        lines += [f"| {mode} | {pct(r['final_test_accuracy'])} | {pct(r['early_stop_test_accuracy'])} | "
                  f"{r['wall_time_s'] / 60:.0f} min |" for mode, r in rows.items()]
        lines.append("")
    if "schedule" in results:
        rows = results["schedule"]
        lines += [f"**Schedule**: Early-Bird tickets at p = {RATIO} (channels), searched with {EB_FLAGS} under each "
                  f"decay ({rows['late']['schedule_epochs']:g} epochs), each retrained from its EB weights with the "
                  f"dense flagfile ({rows['late']['total_steps']:,} iterations).", "",
                  "| decay at epochs | EB epoch | ticket parameters | retrained test @ end | @ early stop |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['decay_epochs']} ({name}) | {r['eb_epoch']} | {r['parameters']:,} | "
                  f"{pct(r['final_test_accuracy'])} | {pct(r['early_stop_test_accuracy'])} |"
                  for name, r in rows.items()]
        lines.append("")
    if "warmup" in results:
        rows = results["warmup"]
        lines += [f"**Warmup**: ResNet-20, convolutions pruned once to {100 * FLAGS.warmup_density:g}% (the output "
                  f"layer dense), {FLAGS.resnet_steps:,} iterations per training (the paper: 30,000), decay and "
                  "warmup at the paper's fractions.", "",
                  "| rate | dense @ early stop | ticket @ early stop | random reinit @ early stop | ticket - reinit |",
                  "|---|---|---|---|---|"]
        lines += [f"| {'0.03, warmup' if name == 'with' else '0.1, no warmup'} | "
                  f"{pct(r['dense']['early_stop_test_accuracy'])} | {pct(r['ticket']['early_stop_test_accuracy'])} | "
                  f"{pct(r['reinit']['early_stop_test_accuracy'])} | {100 * r['gap']:+.2f} pp |"
                  for name, r in rows.items()]
        lines.append("")
    lines += checks_table(checks)
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.parts) - set(PARTS))
    if unknown or not FLAGS.parts:
        sys.exit(f"reproduce_recipes: error: --parts: {unknown or 'empty'}; choose from {list(PARTS)}.")
    if not 0 < FLAGS.warmup_density < 1:
        sys.exit(f"reproduce_recipes: error: --warmup_density must be in (0, 1), got {FLAGS.warmup_density}.")
    data = data_args("reproduce_recipes")
    results, checks = {}, []
    for part in PARTS:
        if part in FLAGS.parts:
            results[part], part_checks = RUNS[part](data)
            checks += part_checks
    print(f"\n{'target':<80} {'measured':<22} met")
    for claim, measured, _, ok in checks:
        print(f"{claim:<80} {measured:<22} {'yes' if ok else 'MISSED'}")
    write_reproduction(FLAGS.output_dir, {
        "parts": results, "resnet_steps": FLAGS.resnet_steps,
        "checks": checks_json(checks)},
        markdown(results, checks, command_line()))


if __name__ == "__main__":
    app.run(main)
