"""IMP found in 8 bits, retrained at fp32, against the fp32-found ticket (LeNet-300-100, full MNIST).

    bash tools/env.sh python tools/reproduce_int8_imp_mnist.py --data_dir=../shared/data/mnist \
        --fp32_run=runs/repro_imp_mnist

1. ``lt-imp --precision=int8`` (8-bit weights, activations and gradients) with the paper's
   LeNet settings for ``--rounds`` rounds of ``--search_steps`` iterations (12 rounds: 7.0%);
2. ``lt-retrain`` of that round's ticket at fp32 for ``--retrain_steps`` iterations (XLA);
3. the target: within 0.3 pp of the fp32-found ticket at the same remaining fraction, read from
   the fp32 IMP run (``tools/reproduce_imp_mnist.py``), whose rounds trained ``--retrain_steps``.

Writes ``reproduction.json`` and ``reproduction.md`` into ``--output_dir``.
"""
import os
import sys

from absl import app, flags

from repro_util import REPO, command_line, data_args, define_data_flags, load_json, run_module, write_reproduction

define_data_flags("MNIST IDX")
flags.DEFINE_string("fp32_run", "runs/repro_imp_mnist", "The fp32 IMP run to compare with.")
flags.DEFINE_string("output_dir", "runs/repro_int8_imp_mnist", "Folder of the int8 search and the retraining.")
flags.DEFINE_integer("rounds", 12, "Pruning rounds of the int8 search (12 reaches 7.0%).")
flags.DEFINE_integer("search_steps", 10_000, "Iterations per int8 search round.")
flags.DEFINE_integer("retrain_steps", 20_000, "fp32 retraining iterations (same as the fp32 run's rounds).")
FLAGS = flags.FLAGS


def _run(module, args):
    run_module("reproduce_int8_imp_mnist", module, args)


def main(argv):
    del argv
    data = data_args("reproduce_int8_imp_mnist")
    fp32_metrics = os.path.join(REPO, FLAGS.fp32_run, f"round_{FLAGS.rounds}", "metrics.json")
    if not os.path.exists(fp32_metrics):
        sys.exit(f"reproduce_int8_imp_mnist: error: {fp32_metrics} is missing; run tools/reproduce_imp_mnist.py first.")
    out = FLAGS.output_dir
    _run("lt_keras.bin.imp", ["--flagfile=flags/lenet300_mnist_imp.flags", *data, "--precision=int8",
                              f"--rounds={FLAGS.rounds}", f"--train_steps={FLAGS.search_steps}", "--controls=",
                              f"--output_dir={out}/search"])
    _run("lt_keras.bin.retrain", ["--flagfile=flags/lenet300_mnist_dense.flags", *data,
                                  f"--ticket_dir={out}/search/round_{FLAGS.rounds}/ticket",
                                  f"--train_steps={FLAGS.retrain_steps}", f"--output_dir={out}/retrain_fp32"])
    fp32 = load_json(fp32_metrics)
    int8 = load_json(out, "retrain_fp32", "summary.json")
    rows = []
    for when in ("early_stop", "final"):
        key = f"{when}_test_accuracy"
        gap = 100 * (fp32[key] - int8[key])
        rows.append({"when": when, "density": int8["density"], "int8_found": int8[key], "fp32_found": fp32[key],
                     "gap_pp": gap, "met": gap <= 0.3})
    lines = ["| weights % | accuracy at | int8-found, fp32-retrained | fp32-found | gap (pp) | within 0.3 pp |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {100 * r['density']:.1f} | {r['when']} | {100 * r['int8_found']:.2f}% | {100 * r['fp32_found']:.2f}% "
              f"| {r['gap_pp']:+.2f} | {'yes' if r['met'] else '**MISSED**'} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    write_reproduction(out, {"rows": rows, "search_steps": FLAGS.search_steps, "retrain_steps": FLAGS.retrain_steps},
                       f"Command: `{command_line()}`\n\n{text}")


if __name__ == "__main__":
    app.run(main)
