"""Reproduce Frankle & Carbin's LeNet-300-100 / MNIST lottery tickets and check TARGETS.md.

    bash tools/env.sh python tools/reproduce_imp_mnist.py --data_dir=../shared/data/mnist

Runs (or resumes) ``lt-imp`` with ``flags/lenet300_mnist_imp.flags`` (Adam
1.2e-3, batch 60, fc 20% / output 10% per round, rewind to theta_0, random
reinit control) for ``--rounds`` rounds of ``--train_steps`` iterations, then
prints the round table and the paper's targets with the measured values:

- ticket at 7.0% (round 12) >= dense - 0.1 pp and above random reinit;
- ticket at 3.6% (round 15) >= 97.8%;
- early-stop iteration at 21.1% (round 7) earlier than dense.

Accuracies are checked at the early-stop iteration (minimum validation loss,
as in the paper's figures) and at the end of training; both are printed.
Writes ``reproduction.json`` and ``reproduction.md`` into the run directory
next to lt-imp's ``report.png``. ``--seeds=0,1,2`` runs each seed (seed N in
``<output_dir>_seed<N>``, seed 0 in ``--output_dir``) and reports them in
``<output_dir>_mean``: mean +- standard deviation, every check judged on the
means.
"""
import os
import sys

from absl import app, flags

from repro_util import (REPO, checks_json, checks_table, command_line, data_args, define_data_flags,
                        define_shard_flag, load_json, mean_rounds, pct_pm, run_module, shard_of, write_reproduction)

define_data_flags("MNIST IDX")
define_shard_flag()
flags.DEFINE_string("output_dir", "runs/repro_imp_mnist", "Run directory (resumed when it exists).")
flags.DEFINE_integer("train_steps", 50_000, "Iterations per round (paper: 50K).")
flags.DEFINE_integer("rounds", 15, "Pruning rounds (15 reaches 3.6% of the weights).")
flags.DEFINE_list("seeds", [], "Run these seeds and report them together (mean +- std; checks judged on the means).")
FLAGS = flags.FLAGS

ROUND_7_0, ROUND_3_6, ROUND_21_1 = 12, 15, 7


def checks(rounds):
    """The TARGETS.md rows as (claim, measured, target, met) for the rounds that ran."""
    dense = rounds[0]
    out = []
    for when in ("early_stop", "final"):
        key = f"{when}_test_accuracy"
        if len(rounds) > ROUND_7_0:
            r = rounds[ROUND_7_0]
            reinit = r["controls"].get("random_reinit", {}).get(key)
            out.append((f"ticket at {100 * r['density']:.1f}% >= dense - 0.1 pp ({when})",
                        f"{100 * r[key]:.2f}% vs dense {100 * dense[key]:.2f}%",
                        f">= {100 * dense[key] - 0.1:.2f}%", r[key] >= dense[key] - 0.001))
            if reinit is not None:
                out.append((f"ticket at {100 * r['density']:.1f}% > random reinit ({when})",
                            f"{100 * r[key]:.2f}% vs {100 * reinit:.2f}%", "ticket > reinit", r[key] > reinit))
        if len(rounds) > ROUND_3_6:
            r = rounds[ROUND_3_6]
            out.append((f"ticket at {100 * r['density']:.1f}% >= 97.8% ({when})", f"{100 * r[key]:.2f}%",
                        ">= 97.80%", r[key] >= 0.978))
    if len(rounds) > ROUND_21_1:
        r = rounds[ROUND_21_1]
        out.append((f"early-stop iteration at {100 * r['density']:.1f}% earlier than dense",
                    f"{r['early_stop_step']:.0f} vs dense {dense['early_stop_step']:.0f}", "earlier",
                    r["early_stop_step"] < dense["early_stop_step"]))
    return out


def markdown(rounds, rows, command):
    lines = ["| round | weights % | test @ early stop | test @ end | early-stop it | random reinit @ end |",
             "|---|---|---|---|---|---|"]
    for r in rounds:
        reinit = "random_reinit" in r["controls"]
        lines.append(f"| {r['round']} | {100 * r['density']:.1f} | {pct_pm(r, 'early_stop_test_accuracy')} | "
                     f"{pct_pm(r, 'final_test_accuracy')} | {r['early_stop_step']:.0f} | "
                     + (f"{pct_pm(r, 'controls', 'random_reinit', 'final_test_accuracy')} |" if reinit else "- |"))
    lines += ["", *checks_table(rows)]
    return f"Command: `{command}`\n\n" + "\n".join(lines) + "\n"


def main(argv):
    del argv
    data = data_args("reproduce_imp_mnist")
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        sys.exit(f"reproduce_imp_mnist: error: --seeds: {FLAGS.seeds} are not whole numbers.")
    per_seed, mine = [], shard_of("reproduce_imp_mnist", seeds or [0])
    for seed in seeds or [0]:
        folder = FLAGS.output_dir + (f"_seed{seed}" if seed else "")
        if seed in mine:
            run_module("reproduce_imp_mnist", "lt_keras.bin.imp", [
                "--flagfile=flags/lenet300_mnist_imp.flags", *data, f"--rounds={FLAGS.rounds}",
                f"--train_steps={FLAGS.train_steps}", f"--seed={seed}", f"--output_dir={folder}"])
        if not os.path.exists(os.path.join(REPO, folder, "summary.json")):
            print(f"seeds {mine} of this shard are done; seed {seed} is another shard's. Re-run without --shard "
                  "once every shard has finished to write the report.")
            return
        per_seed.append(load_json(REPO, folder, "summary.json")["rounds"])
    run_dir = os.path.join(REPO, FLAGS.output_dir + ("_mean" if seeds else ""))
    rounds = mean_rounds(per_seed) if seeds else per_seed[0]
    rows = checks(rounds)
    print(f"\n{'target':<58} {'measured':<28} {'needed':<16} met")
    for claim, measured, target, ok in rows:
        print(f"{claim:<58} {measured:<28} {target:<16} {'yes' if ok else 'MISSED'}")
    write_reproduction(run_dir, {"train_steps": FLAGS.train_steps, "rounds": FLAGS.rounds, "checks": checks_json(rows)},
                       markdown(rounds, rows, command_line()))


if __name__ == "__main__":
    app.run(main)
