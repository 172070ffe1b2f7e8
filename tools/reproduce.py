"""Run every accuracy reproduction of TARGETS.md at its documented budget and write docs/RESULTS.md.

    bash tools/env.sh python tools/reproduce.py --mnist_dir=../shared/data/mnist \
        --cifar10_dir=../shared/data/cifar10/cifar-10-batches-py   # hours; resumes where it stopped
    bash tools/env.sh python tools/reproduce.py --quick --output_root=/tmp/q --results=/tmp/q/RESULTS.md

Steps (each resumable; a finished step trains nothing):

1. IMP lottery tickets, LeNet-300-100 / MNIST (tools/reproduce_imp_mnist.py), 15 rounds x 20K iterations;
2. supermasks and untrained masks, LeNet-300-100 / MNIST (tools/reproduce_supermask_mnist.py), 300 epochs;
3. IMP found in 8 bits and retrained at fp32 (tools/reproduce_int8_imp_mnist.py), 12 rounds x 10K;
4. Bernoulli supermask over frozen Conv-4 weights on the CIFAR-10 subset (lt-supermask with
   flags/conv4_cifar10_supermask.flags), 9,000 training images, 30 epochs;
5. Early-Bird, VGG-11-BN (quarter width) on the CIFAR-10 subset (lt-early-bird with
   flags/vgg11_cifar10_eb_quick.flags), with the LT one-shot baseline;
6. the same Early-Bird search in 8 bits (flags/vgg11_cifar10_eb_quick_int8.flags), compared with 5;
7. Early-Bird, ResNet-20 on the CIFAR-10 subset (flags/resnet20_cifar10_early_bird_cpu.flags);
8. zeros, signs, criteria and one-shot vs iterative, LeNet-300-100 / MNIST (tools/reproduce_zhou.py),
   27 IMP chains x 5K iterations a round, two at a time;
9. Early-Bird, VGG-11-BN (quarter width) on the full CIFAR-10 training set
   (flags/vgg11_cifar10_full_eb_cpu.flags, ``--cifar10_full_dir``), every ratio retrained, with the
   LT one-shot baseline (~3.5 hours alone on 2 cores);
10. zeros and signs, Conv-2 on the full CIFAR-10 training set (tools/reproduce_zhou.py
   --net=conv2_cifar10, ``--cifar10_full_dir``): the mask-1 and mask-0 actions, each pruned once to 7.1%,
   1,000 iterations a round (~1.5 hours alone on 2 cores);
11. the training-recipe claims on the full CIFAR-10 (tools/reproduce_recipes.py, ``--cifar10_full_dir``):
   dense VGG-11-BN with and without crop + flip, Early-Bird tickets found under late vs early rate decay
   and retrained alike, ResNet-20 tickets vs random reinit with and without warmup (~4 hours alone);
12. learned supermasks on the full CIFAR-10 (tools/reproduce_supermask_cifar.py, ``--cifar10_full_dir``):
   Conv-6, Conv-4, Conv-2 with the paper's signed constants and dynamic weight rescaling, then with Glorot
   weights (Zhou's optimizer, 200 epochs each), then edge-popup on Conv-4/6 (days each on 2 cores).

``--report_only`` trains nothing: it writes the chosen steps' sections from their run directories as
they stand (e.g. while step 12 trains in another process). ``--quick`` runs the same pipeline with tiny
budgets on the embedded digits (checks the plumbing and the report, not the numbers). The report holds the
tables, the plots, the exact commands, date, seed and library versions.
"""
import datetime
import os
import platform
import re
import shutil
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repro_util import REPO, load_json, merge_report, pct, relative_arg, run_module  # noqa: E402

flags.DEFINE_string("mnist_dir", None, "Folder with the MNIST IDX files.")
flags.DEFINE_string("cifar10_dir", None, "The cifar-10-batches-py folder.")
flags.DEFINE_string("cifar10_full_dir", None, "A cifar-10-batches-py folder with all five data_batch files "
                    "(the full-CIFAR-10 steps).")
flags.DEFINE_bool("quick", False, "Tiny budgets on the embedded digits (minutes): checks the pipeline only.")
flags.DEFINE_string("output_root", "runs", "Where the run directories go.")
flags.DEFINE_string("results", "docs/RESULTS.md", "The report to write; the sections of steps not run this time "
                    "are kept from it.")
flags.DEFINE_string("bench_json", None, "Also report the speed figures of this tools/bench.py JSON.")
STEPS = ("imp", "supermask", "int8", "supermask_conv4", "early_bird", "early_bird_int8", "early_bird_resnet20",
         "zhou", "early_bird_full", "zhou_conv2", "recipes", "supermask_full")
flags.DEFINE_list("steps", list(STEPS), "Which reproductions to run and report.")
flags.DEFINE_bool("report_only", False, "Train nothing: write the chosen steps' sections from their run directories "
                  "as they stand (supermask_full re-reads its unfinished runs' logs).")
FLAGS = flags.FLAGS

QUICK_MARK = "**Quick mode:"  # the line that marks a report of tiny budgets
QUICK_DATA = "--data_flags=--dataset=mnist_5k,--validation_size=500,--max_train_examples=600,--normalization=dataset"


EB_FP32_RUN = "repro_eb_vgg11"  # the 8-bit search is compared with this run
EARLY_BIRD_STEPS = (  # (title, kind, flagfile, run directory)
    ("Early-Bird tickets, VGG-11-BN on the CIFAR-10 subset", "early_bird", "vgg11_cifar10_eb_quick.flags",
     EB_FP32_RUN),
    ("Early-Bird search in 8 bits, VGG-11-BN on the CIFAR-10 subset", "early_bird_int8",
     "vgg11_cifar10_eb_quick_int8.flags", "repro_eb_vgg11_int8"),
    ("Early-Bird tickets, ResNet-20 on the CIFAR-10 subset", "early_bird_resnet20",
     "resnet20_cifar10_early_bird_cpu.flags", "repro_eb_resnet20"),
)


def steps(root, quick):
    """(title, kind, command) per reproduction; kind says how to read its results."""
    py = os.path.join("tools", "")
    if quick:
        mnist = [QUICK_DATA]
        cifar = ["--dataset=mnist_5k", "--validation_size=500", "--max_train_examples=600", "--normalization=dataset"]
        cifar_full = cifar
        imp = ["--rounds=1", "--train_steps=40"]
        sm = ["--epochs=1", "--eval_every=20", "--dense_steps=40"]
        int8 = ["--rounds=1", "--search_steps=40", "--retrain_steps=40"]
        eb = ["--epochs=3", "--queue_length=2", "--epsilon=0.5", "--batch_size=100", "--lr_schedule=step",
              "--lr_decay_steps=2ep", "--nojit_compile"]
        conv = ["--epochs=1", "--batch_size=100", "--eval_samples=2"]
        zhou = ["--train_steps=20", "--eval_every=10", "--chains=oneshot_7.0"]
        zhou_conv2 = ["--train_steps=10", "--eval_every=5", "--chains=large_final,mask1_signed_reinit"]
        zhou_cifar = [QUICK_DATA]
        recipes = ["--vgg_flags=--epochs=2,--batch_size=100,--nojit_compile",
                   "--eb_flags=--epochs=3,--queue_length=2,--epsilon=0.9", "--resnet_steps=10",
                   "--resnet_flags=--batch_size=50,--eval_every=5"]
        supermask_full = ["--runs=conv4_glorot", "--run_flags=--epochs=1,--batch_size=100,--eval_samples=2",
                          f"--record={root}/supermask_cifar_record.json"]
    else:
        needed = {"mnist_dir": ("imp", "supermask", "int8", "zhou"),
                  "cifar10_dir": ("supermask_conv4", "early_bird", "early_bird_int8", "early_bird_resnet20"),
                  "cifar10_full_dir": ("early_bird_full", "zhou_conv2", "recipes", "supermask_full")}
        missing = [name for name, kinds in needed.items() if set(kinds) & set(FLAGS.steps) and not FLAGS[name].value]
        if missing:
            sys.exit(f"reproduce: error: the chosen --steps need {', '.join('--' + m for m in missing)} (or --quick).")
        mnist, cifar, cifar_full = ([f"--data_dir={os.path.abspath(FLAGS[name].value)}"] if FLAGS[name].value
                                    else [] for name in needed)
        imp = ["--rounds=15", "--train_steps=20000"]
        sm = ["--epochs=300"]
        int8 = ["--rounds=12", "--search_steps=10000", "--retrain_steps=20000"]
        eb = []
        conv = ["--validation_size=1000", "--max_train_examples=9000", "--epochs=30", "--eval_every=180"]
        zhou = ["--train_steps=5000", "--eval_every=250", "--jobs=2"]
        zhou_conv2 = ["--train_steps=1000", "--eval_every=250", "--jobs=2"]
        zhou_cifar = cifar_full
        recipes = []
        supermask_full = ["--record=docs/results/supermask_cifar_record.json"]  # every run; the record outlives runs/
    return [
        ("IMP lottery tickets, LeNet-300-100 on MNIST", "imp",
         [py + "reproduce_imp_mnist.py", *mnist, *imp, f"--output_dir={root}/repro_imp_mnist"]),
        ("Supermasks and untrained masks, LeNet-300-100 on MNIST", "supermask",
         [py + "reproduce_supermask_mnist.py", *mnist, *sm, f"--output_dir={root}/repro_supermask_mnist"]),
        ("IMP found in 8 bits, retrained at fp32", "int8",
         [py + "reproduce_int8_imp_mnist.py", *mnist, *int8, f"--fp32_run={root}/repro_imp_mnist",
          f"--output_dir={root}/repro_int8_imp_mnist"]),
        ("Supermask over frozen Conv-4 weights, CIFAR-10 subset", "supermask_conv4",
         ["-m", "lt_keras.bin.supermask", "--flagfile=flags/conv4_cifar10_supermask.flags", *cifar, *conv,
          f"--output_dir={root}/repro_supermask_conv4"]),
        *[(title, kind, ["-m", "lt_keras.bin.early_bird", f"--flagfile=flags/{flagfile}", *cifar, *eb,
                         f"--output_dir={root}/{name}"]) for title, kind, flagfile, name in EARLY_BIRD_STEPS],
        ("Zeros, signs and criteria (Zhou et al.), LeNet-300-100 on MNIST", "zhou",
         [py + "reproduce_zhou.py", *mnist, *zhou, f"--output_dir={root}/repro_zhou_mnist"]),
        ("Early-Bird tickets, VGG-11-BN on the full CIFAR-10 (CPU scale)", "early_bird_full",
         ["-m", "lt_keras.bin.early_bird", "--flagfile=flags/vgg11_cifar10_full_eb_cpu.flags", *cifar_full, *eb,
          f"--output_dir={root}/repro_eb_vgg11_full"]),
        ("Zeros and signs (Zhou et al.), Conv-2 on the full CIFAR-10 (CPU scale)", "zhou_conv2",
         [py + "reproduce_zhou.py", "--net=conv2_cifar10", *zhou_cifar,
          *zhou_conv2, f"--output_dir={root}/repro_zhou_conv2_cifar10"]),
        ("Training recipes: augmentation, the Early-Bird schedule, warmup (full CIFAR-10, CPU scale)", "recipes",
         [py + "reproduce_recipes.py", *zhou_cifar, *recipes, f"--output_dir={root}/repro_recipes"]),
        ("Learned supermasks, Conv-4 and Conv-6 on the full CIFAR-10", "supermask_full",
         [py + "reproduce_supermask_cifar.py", *zhou_cifar, *supermask_full,
          f"--output_dir={root}/repro_supermask_cifar"]),
    ]


def _run(command):
    if command[0] == "-m":
        run_module("reproduce", command[1], command[2:])
    else:
        import subprocess

        print("running:", " ".join(command), flush=True)
        if subprocess.call([sys.executable, *command], cwd=REPO) != 0:
            sys.exit(f"reproduce: error: {command[0]} failed (see above); re-run to resume.")


def _out_dir(command):
    return next(a.split("=", 1)[1] for a in command if a.startswith("--output_dir="))


REPORTED = ("imp", "supermask", "int8", "zhou", "zhou_conv2", "recipes", "supermask_full")  # reproduction.md


def _report_source(kind, command):
    """The file a step's section is written from (reproduction.md of a driver, or a binary's summary.json)."""
    out = os.path.join(REPO, _out_dir(command))
    if kind == "supermask_full":  # its driver reports any run state: its folder, or the record of a lost one
        record = next((a.split("=", 1)[1] for a in command if a.startswith("--record=")), None)
        return out if os.path.exists(out) or record is None else os.path.join(REPO, record)
    return os.path.join(out, "reproduction.md" if kind in REPORTED else "summary.json")


def section(title, kind, command, docs_dir):
    out = os.path.join(REPO, _out_dir(command))
    shown = "python " + " ".join(relative_arg(arg) for arg in command)
    lines = [f"## {title}", "", f"Command: `bash tools/env.sh {shown}`", ""]
    figures = []
    if kind in REPORTED:
        text = open(os.path.join(out, "reproduction.md")).read()
        text = text.split("\n\n", 1)[1] if text.startswith("Command:") else text
        lines.append("\n".join(line for line in text.splitlines() if not line.startswith("![")))
        if kind in ("zhou", "zhou_conv2"):  # the figures its report names
            figures += [(name, caption) for caption, name in re.findall(r"^!\[(.+)\]\((.+)\)$", text, re.M)]
        if kind == "imp":
            figures.append(("report.png", "Test accuracy and early-stop iteration vs weights remaining"))
        if kind == "supermask":
            figures += [(os.path.join(n, "curves.png"), f"supermask learning curves ({n})")
                        for n in ("glorot", "signed_constant")]
    elif kind == "supermask_conv4":
        lines += _supermask_conv_lines(load_json(out, "summary.json"))
        figures.append(("curves.png", "Conv-4 supermask learning curves"))
    else:
        summary = load_json(out, "summary.json")
        lines += _early_bird_table(summary)
        if kind == "early_bird_int8":
            lines += _int8_comparison(summary, load_json(os.path.join(os.path.dirname(out), EB_FP32_RUN),
                                                         "summary.json"))
        figures.append(("eb_distances.png", "Mask distance between epochs (Early-Bird heatmap)"))
    for name, caption in figures:
        source = os.path.join(out, name)
        if os.path.exists(source):
            target = f"{os.path.basename(_out_dir(command))}_{name.replace('/', '_')}"
            shutil.copyfile(source, os.path.join(docs_dir, target))
            lines += ["", f"![{caption}](results/{target})"]
    return "\n".join(lines) + "\n"


def _early_bird_table(summary):
    epochs = summary["schedule_epochs"]
    lines = [f"Schedule {epochs:g} epochs; the search ran {summary['search_epochs']} epochs "
             f"({summary['search_wall_time_s']:.0f} s); retraining from the {summary['retrain_from']} weights.", "",
             "| p | EB epoch (target <= 25% of the schedule) | EB retrain acc | LT one-shot acc (target: within 1 pp) "
             "| EB FLOPs | LT FLOPs | FLOPs saved (target >= 2x) |", "|---|---|---|---|---|---|---|"]
    for ratio, r in summary["ratios"].items():
        if not r.get("emerged"):
            lines.append(f"| {ratio} | did not emerge | - | - | - | - | - |")
            continue
        eb_ok = "" if r["eb_epoch"] <= 0.25 * epochs else " **MISSED**"
        acc, base = r.get("retrain_test_accuracy"), r.get("baseline_test_accuracy")
        acc_ok = "" if acc is None or base is None else ("" if base - acc <= 0.01 else " **MISSED**")
        flops_ok = "" if r["flops_ratio"] >= 2 else " **MISSED**"
        lines.append(f"| {ratio} | {r['eb_epoch']} ({100 * r['eb_fraction_of_schedule']:.0f}%){eb_ok} | "
                     f"{pct(acc, '%')}{acc_ok} | {pct(base, '%')} | {r['eb_total_flops'] / 1e12:.2f} T | "
                     f"{r['lt_total_flops'] / 1e12:.2f} T | {r['flops_ratio']:.2f}x{flops_ok} |")
    return lines + _over_pruning(summary)


def _over_pruning(summary):
    """You et al.'s over-pruning claim (p >= 0.7 hurts): the highest ratio's EB retrain below the lowest's."""
    done = {float(p): r["retrain_test_accuracy"] for p, r in summary["ratios"].items()
            if r.get("retrain_test_accuracy") is not None}
    if len(done) < 2 or max(done) < 0.7:
        return []
    low, high = min(done), max(done)
    verdict = "shown" if done[high] < done[low] else "**not shown**"
    return ["", f"Over-pruning hurts (You et al., p >= 0.7): the p = {high:g} ticket retrains to "
            f"{pct(done[high], '%')}, {100 * (done[low] - done[high]):.2f} pp below p = {low:g} "
            f"({pct(done[low], '%')}): {verdict}."]


def _supermask_conv_lines(summary):
    evals = summary["evaluations"]
    sampled = evals.get("sampled", {})
    return [f"{summary['total_steps']:,} iterations ({summary['wall_time_s'] / 60:.0f} min); no weight is trained.", "",
            "| mask at evaluation | test accuracy | paper (Conv-4, full CIFAR-10) |", "|---|---|---|",
            f"| sampled (mean of {sampled.get('samples', '-')}) | {pct(sampled.get('accuracy'), '%')} | 72.5% |",
            f"| expected (sigmoid(scores) > 0.5) | {pct(evals.get('expected', {}).get('accuracy'), '%')} | - |", "",
            f"Kept weights of the expected mask: {100 * summary['ticket_density']:.1f}%."]


def _int8_comparison(int8, fp32):
    """Targets: the 8-bit search's EB epoch within 5 epochs of fp32's; its ticket's retrain within 1 pp."""
    lines = ["", "| p | EB epoch, fp32 search | EB epoch, int8 search (target: within 5) "
             "| retrain, fp32-found | retrain, int8-found (target: within 1 pp) |", "|---|---|---|---|---|"]
    for ratio, r in int8["ratios"].items():
        f = fp32["ratios"].get(ratio, {})
        epochs = (r.get("eb_epoch"), f.get("eb_epoch"))
        epoch_ok = "" if None in epochs else ("" if abs(epochs[0] - epochs[1]) <= 5 else " **MISSED**")
        accs = (r.get("retrain_test_accuracy"), f.get("retrain_test_accuracy"))
        acc_ok = "" if None in accs else ("" if accs[1] - accs[0] <= 0.01 else " **MISSED**")
        lines.append(f"| {ratio} | {f.get('eb_epoch', '-')} | {r.get('eb_epoch', '-')}{epoch_ok} | "
                     f"{pct(accs[1], '%')} | {pct(accs[0], '%')}{acc_ok} |")
    return lines


def bench_section(path):
    """The speed figures of a tools/bench.py run, as measured, with their targets."""
    report = load_json(path)
    mode = "--quick " if report["quick"] else ""
    lines = ["## Speed (tools/bench.py)", "",
             f"Command: `bash tools/env.sh python tools/bench.py {mode}--json_out={os.path.relpath(path, REPO)}` "
             f"({report['wall_time_s']:.0f} s; medians of interleaved rounds, each figure in its own process; "
             "where a figure ran in several processes, the median of their ratios, each listed).", "",
             "| figure | ratio | median | processes | target | verdict |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        target = "reference" if row["target"] is None else f"<= {row['target']}"
        verdict = "-" if row["met"] is None else ("met" if row["met"] else "**MISSED**")
        runs = ", ".join(f"{v:.3f}" for v in row.get("runs", [row["value"]]))
        lines.append(f"| {row['figure']} | {row['ratio']} | {row['value']:.3f} | {runs} | {target} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    root = FLAGS.output_root
    unknown = sorted(set(FLAGS.steps) - set(STEPS))
    if unknown:
        sys.exit(f"reproduce: error: --steps: unknown {unknown}.")
    results = os.path.join(REPO, FLAGS.results) if not os.path.isabs(FLAGS.results) else FLAGS.results
    old = open(results).read() if os.path.exists(results) else ""
    if FLAGS.quick and old and QUICK_MARK not in old:
        sys.exit(f"reproduce: error: --results: {FLAGS.results} holds full-budget results; give --quick another "
                 "file (e.g. --results=/tmp/q/RESULTS.md).")
    if QUICK_MARK in old and not FLAGS.quick:
        old = ""  # quick numbers check the pipeline only: never mixed with real ones
    plan = [step for step in steps(root, FLAGS.quick) if step[1] in FLAGS.steps]
    if FLAGS.report_only:
        not_run = [kind for _, kind, command in plan if not os.path.exists(_report_source(kind, command))]
        if not_run:
            sys.exit(f"reproduce: error: --report_only: no results yet for {', '.join(not_run)}; run "
                     "those steps without --report_only first.")
    for _, kind, command in plan:
        if not FLAGS.report_only:
            _run(command)
        elif kind == "supermask_full":
            _run([*command, "--report_only"])
    docs_dir = os.path.join(os.path.dirname(results), "results")
    os.makedirs(docs_dir, exist_ok=True)
    from lt_keras.io_utils import atomic_write_text
    from lt_keras.versions import library_versions

    versions = library_versions()
    head = ["# lt_keras results", "",
            f"Written by `tools/reproduce.py{' --quick' if FLAGS.quick else ''}`, each section when its step last "
            f"ran (this file last on {datetime.date.today().isoformat()}), {platform.machine()} {platform.system()}, "
            f"{os.cpu_count()} CPU cores, no GPU unless stated; seed 0 everywhere.",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if isinstance(v, str)) + ".", "",
            (QUICK_MARK + " tiny budgets on the embedded digits; these numbers check the pipeline, not the papers.**"
             if FLAGS.quick else "Budgets are scaled where a 2-core CPU forces it; each section says how."), ""]
    body = [section(title, kind, command, docs_dir) for title, kind, command in plan]
    if FLAGS.bench_json:
        body.append(bench_section(os.path.abspath(FLAGS.bench_json)))
    atomic_write_text(results, "\n".join(head) + "\n" + "\n".join(merge_report(old, body)))
    print(f"wrote {results}")


if __name__ == "__main__":
    app.run(main)
