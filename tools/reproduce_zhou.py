"""Reproduce Zhou et al. (2019), "Deconstructing Lottery Tickets": zeros, signs, criteria, one-shot vs iterative.

    bash tools/env.sh python tools/reproduce_zhou.py --data_dir=../shared/data/mnist --jobs=2
    bash tools/env.sh python tools/reproduce_zhou.py --net=conv2_cifar10 \
        --data_dir=../shared/data/cifar10_full/cifar-10-batches-py --train_steps=1000 --jobs=2

LeNet-300-100 on MNIST with Frankle & Carbin's optimizer and layer-wise
rates (flags/lenet300_mnist_imp.flags: Adam 1.2e-3, batch 60, fc 20% /
output 10% per round, rewind to theta_0), one seed (``--seed``), ``--train_steps``
iterations per round, test accuracy at early stop (minimum validation loss,
evaluated every ``--eval_every``) and at the end. Each chain is its own
``lt-imp`` run directory under ``--output_dir``, resumed where it stopped;
every chain draws theta_0 and the dense round's data order from the same
seed, so their dense rounds are the same training (the report checks it).

Chains: the 13 mask criteria (down to 7.0%); the mask-1 actions applied at
every round (down to 3.6%); the mask-0 actions (down to 7.0%); one-shot
pruning to the iterative chain's per-layer densities at 51.3, 21.1, 7.0 and
3.6%. Each round also records the untrained accuracy of its mask over the
rewound weights (the supermask observation of section 5).

``--net=conv2_cifar10``: Conv-2 on CIFAR-10 (flags/conv2_cifar10_imp.flags:
Adam 2e-4, batch 60, conv 10% / fc 20% / output 10% per round), scaled to
two cores: the mask-1 and mask-0 chains prune once, straight to the rates
twelve rounds would reach (7.1% of weights), instead of iteratively.

The mask-1 chains differ from the lottery-ticket chain only after round 0,
so they start from a copy of its dense round (``init_weights.npz`` and
``round_0/``, the same training bit for bit: a run resumes identically);
the other chains train their own, and the report checks all are equal.

Prints and writes ``reproduction.md`` / ``reproduction.json`` (tables, the
TARGETS.md checks marked met or MISSED, never tuned to) and one plot per
figure into ``--output_dir``; ``tools/reproduce.py`` puts them in
docs/RESULTS.md. A report can be written from the chains done so far with
``--report_only``.

``--seeds=0,1,2`` trains every chain at each seed (seed N in the folder of a
single-seed run, ``<folder>_seed<N>``) and reports them together in
``<folder>_mean``: each table cell and plot point is the mean +- standard
deviation over the seeds, and every check is judged on the means.
"""
import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

from repro_util import (REPO, checks_table, command_line, data_args, define_data_flags, define_shard_flag, mean_rounds,
                        pct, pct_pm, shard_of, write_reproduction)

define_data_flags("MNIST IDX")
define_shard_flag()
flags.DEFINE_enum("net", "lenet300_mnist", ["lenet300_mnist", "conv2_cifar10"], "Network and dataset.")
flags.DEFINE_string("output_dir", None, "Root of the chains' run directories (default runs/repro_zhou_mnist, "
                    "runs/repro_zhou_conv2_cifar10).")
flags.DEFINE_integer("train_steps", 5000, "Iterations per round (the paper: 50K; at least 5K here).")
flags.DEFINE_integer("eval_every", 250, "Evaluate validation and test sets every N iterations (early stop).")
flags.DEFINE_integer("seed", 0, "Seed of every chain (theta_0, data order, draws); a seed other than 0 writes to "
                     "<the default --output_dir>_seed<N> unless --output_dir is given.", lower_bound=0)
flags.DEFINE_integer("jobs", 1, "Chains trained at once, in separate processes.", lower_bound=1)
flags.DEFINE_list("chains", [], "Only these chains (names as in the report); default all.")
flags.DEFINE_bool("report_only", False, "Train nothing; report the rounds finished so far.")
flags.DEFINE_list("seeds", [], "Train and report these seeds together (mean +- std; checks judged on the means).")
FLAGS = flags.FLAGS

ROUND = {51.3: 3, 21.1: 7, 7.0: 12, 3.6: 15}  # LeNet ladder at fc 20% / output 10% per round
CONV2_ROUNDS = 12  # one-shot to the rates of 12 rounds of conv 10% / fc 20% / output 10%: 7.1% of Conv-2's weights
NETS = {  # flagfile, what the report calls it, the paper's iterations per round, default output folder
    "lenet300_mnist": ("flags/lenet300_mnist_imp.flags", "LeNet-300-100, MNIST", "50K", "runs/repro_zhou_mnist"),
    "conv2_cifar10": ("flags/conv2_cifar10_imp.flags", "Conv-2, CIFAR-10 (45,000 training images)", "20K",
                      "runs/repro_zhou_conv2_cifar10"),
}
CRITERIA = ("large_final", "small_final", "large_init", "small_init", "large_init_large_final",
            "small_init_small_final", "magnitude_increase", "movement", "random", "large_final_same_sign",
            "large_final_diff_sign", "magnitude_increase_same_sign", "magnitude_increase_diff_sign")
MASK1 = ("init", "reinit", "reshuffle", "constant", "signed_reinit", "signed_reshuffle", "signed_constant")
MASK0 = ("zero", "freeze_init", "freeze_init_zero_mask", "freeze_init_zero_all", "freeze_init_zero_reshuffle")
BASE = "large_final"  # the lottery ticket: large_final, mask-1 init, mask-0 zero; shared by all three figures


def ladder():
    """Weights remaining (%) -> round index, for the chosen network."""
    return ROUND if FLAGS.net == "lenet300_mnist" else {7.0: 1}


def chains():
    """name -> extra lt-imp flags; ordered so the targets' chains finish first (the cheap one-shots early)."""
    if FLAGS.net == "conv2_cifar10":
        k = CONV2_ROUNDS
        once = ["--rounds=1", f"--prune_rate_conv={1 - 0.9 ** k:.10f}", f"--prune_rate_fc={1 - 0.8 ** k:.10f}",
                f"--prune_rate_output={1 - 0.9 ** k:.10f}"]
        return {BASE: ["--criterion=large_final", *once], **{f"mask1_{a}": [f"--mask1={a}", *once] for a in MASK1[1:]},
                **{f"mask0_{a}": [f"--mask0={a}", *once] for a in MASK0[1:]}}
    out = {BASE: ["--criterion=large_final", f"--rounds={ROUND[3.6]}"]}
    for density, k in ROUND.items():
        out[f"oneshot_{density}"] = ["--rounds=1", f"--prune_rate_fc={1 - 0.8 ** k:.10f}",
                                     f"--prune_rate_output={1 - 0.9 ** k:.10f}"]
    for action in MASK1[1:]:
        out[f"mask1_{action}"] = [f"--mask1={action}", f"--rounds={ROUND[3.6]}"]
    for action in ("freeze_init", "freeze_init_zero_mask", "freeze_init_zero_reshuffle", "freeze_init_zero_all"):
        out[f"mask0_{action}"] = [f"--mask0={action}", f"--rounds={ROUND[7.0]}"]
    targeted = ("random", "large_init_large_final", "magnitude_increase", "large_final_same_sign", "small_final",
                "small_init_small_final")
    for criterion in targeted + tuple(c for c in CRITERIA[1:] if c not in targeted):
        out[criterion] = [f"--criterion={criterion}", f"--rounds={ROUND[7.0]}"]
    return out


def command(name, extra, data):
    return [sys.executable, "-m", "lt_keras.bin.imp", f"--flagfile={NETS[FLAGS.net][0]}", *data,
            "--controls=", "--prune_count=floor", f"--seed={FLAGS.seed}", f"--train_steps={FLAGS.train_steps}",
            f"--eval_every={FLAGS.eval_every}", *extra,
            f"--output_dir={os.path.join(FLAGS.output_dir, name)}"]


def _waits_for_dense_round(name):
    """A mask-1 chain without a dense round of its own: it can start from the lottery-ticket chain's."""
    return name.startswith("mask1_") and not os.path.exists(os.path.join(REPO, FLAGS.output_dir, name, "round_0"))


def _copy_dense_round(name):
    """Give a chain the lottery-ticket chain's dense round (theta_0 and round_0/, renamed into place)."""
    root, base = os.path.join(REPO, FLAGS.output_dir, name), os.path.join(REPO, FLAGS.output_dir, BASE)
    os.makedirs(root, exist_ok=True)
    shutil.copyfile(os.path.join(base, "init_weights.npz"), os.path.join(root, "init_weights.npz"))
    shutil.rmtree(os.path.join(root, "round_0.partial"), ignore_errors=True)
    shutil.copytree(os.path.join(base, "round_0"), os.path.join(root, "round_0.partial"))
    os.replace(os.path.join(root, "round_0.partial"), os.path.join(root, "round_0"))


def train_all(todo, data):
    """Run the chains, ``--jobs`` at a time; each logs to <chain>.log beside its run directory. A mask-1 chain
    waits for the lottery-ticket chain's dense round (it trains its own if that chain failed)."""
    pending, running, failed, start = list(todo.items()), {}, [], time.time()
    os.makedirs(os.path.join(REPO, FLAGS.output_dir), exist_ok=True)
    while pending or running:
        while pending and len(running) < FLAGS.jobs:
            base_done = os.path.exists(os.path.join(REPO, FLAGS.output_dir, BASE, "round_0", "metrics.json"))
            base_coming = BASE in running or any(n == BASE for n, _ in pending)
            ready = [i for i, (n, _) in enumerate(pending)
                     if base_done or not base_coming or not _waits_for_dense_round(n)]
            if not ready:
                break
            name, extra = pending.pop(ready[0])
            if base_done and _waits_for_dense_round(name):
                _copy_dense_round(name)
            log = open(os.path.join(REPO, FLAGS.output_dir, f"{name}.log"), "a")
            running[name] = subprocess.Popen(command(name, extra, data), cwd=REPO, stdout=log, stderr=log)
            print(f"[{time.time() - start:7.0f} s] started {name} ({len(pending)} waiting)", flush=True)
        time.sleep(5)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                done = len(todo) - len(pending) - len(running)
                eta = (time.time() - start) / done * (len(todo) - done) if done else 0
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {name}.log)"
                print(f"[{time.time() - start:7.0f} s] {name} {status}; {done}/{len(todo)} chains, "
                      f"ETA {eta / 60:.0f} min", flush=True)
                if proc.returncode:
                    failed.append(name)
    return failed


def rounds_of(name):
    """The finished rounds of a chain, in order (a chain still running reports what it has)."""
    root = os.path.join(REPO, FLAGS.output_dir, name)
    out = []
    while os.path.exists(os.path.join(root, f"round_{len(out)}", "metrics.json")):
        with open(os.path.join(root, f"round_{len(out)}", "metrics.json")) as f:
            out.append(json.load(f))
    return out


def acc(rounds, k, key="early_stop_test_accuracy"):
    return rounds[k][key] if len(rounds) > k else None


def cell(rounds, k, key):
    """A table cell: the accuracy, with +- its spread over seeds where averaged."""
    return pct_pm(rounds[k], key) if len(rounds) > k else pct(None)


def table(title, rows, columns, key="early_stop_test_accuracy", rounds_at=ROUND):
    """Markdown: one row per (label, rounds), one column per density of the ladder ``rounds_at``."""
    lines = [f"**{title}** (test accuracy %, {key.replace('_test_accuracy', '').replace('_', ' ')})", "",
             "| | " + " | ".join(f"{d}%" for d in columns) + " |", "|---|" + "---|" * len(columns)]
    for label, rounds in rows:
        lines.append(f"| {label} | " + " | ".join(cell(rounds, rounds_at.get(d, 0), key) for d in columns) + " |")
    return lines


def check(claim, measured, needed, met):
    return {"claim": claim, "measured": measured, "needed": needed, "met": met}


def checks(runs, rounds_at=ROUND):
    """TARGETS.md's Zhou and one-shot rows, for the rounds that exist at the densities of ``rounds_at``; never
    tuned to. The unsigned mask-1 actions are checked at its lowest density (3.6% on LeNet)."""
    out, low = [], min(rounds_at)

    def at(name, density):
        return acc(runs.get(name, []), rounds_at[density]) if density in rounds_at else None

    init = {d: at(BASE, d) for d in (7.0, 3.6)}
    for density in (7.0, 3.6):
        for action in ("signed_reinit", "signed_reshuffle", "signed_constant"):
            v, ref = at(f"mask1_{action}", density), init[density]
            if v is not None and ref is not None:
                out.append(check(f"signs: {action} >= init - 0.3 pp at {density}%", f"{pct(v)} vs init {pct(ref)}",
                                 f">= {pct(ref - 0.003)}", v >= ref - 0.003))
    for action in ("reinit", "reshuffle", "constant"):
        v, ref = at(f"mask1_{action}", low), at(BASE, low)
        if v is not None and ref is not None:
            out.append(check(f"signs: {action} <= init - 0.3 pp at {low}%", f"{pct(v)} vs init {pct(ref)}",
                             f"<= {pct(ref - 0.003)}", v <= ref - 0.003))
    zero, frozen = at(BASE, 7.0), at("mask0_freeze_init", 7.0)
    zero_mask, reshuffled = at("mask0_freeze_init_zero_mask", 7.0), at("mask0_freeze_init_zero_reshuffle", 7.0)
    if zero is not None and frozen is not None:
        out.append(check("zeros: freeze_init < zero at 7.0%", f"{pct(frozen)} vs {pct(zero)}", "<", frozen < zero))
    if zero_mask is not None and zero is not None and frozen is not None:
        out.append(check("zeros: freeze_init_zero_mask >= zero - 0.3 pp at 7.0%", f"{pct(zero_mask)} vs {pct(zero)}",
                         f">= {pct(zero - 0.003)}", zero_mask >= zero - 0.003))
        out.append(check("zeros: freeze_init_zero_mask > freeze_init at 7.0%", f"{pct(zero_mask)} vs {pct(frozen)}",
                         ">", zero_mask > frozen))
    if zero_mask is not None and reshuffled is not None:
        out.append(check("zeros: freeze_init_zero_reshuffle < freeze_init_zero_mask at 7.0%",
                         f"{pct(reshuffled)} vs {pct(zero_mask)}", "<", reshuffled < zero_mask))
    random = at("random", 7.0)
    if random is not None:
        for criterion in ("large_final", "large_init_large_final", "magnitude_increase", "large_final_same_sign"):
            v = at(criterion, 7.0)
            if v is not None:
                out.append(check(f"criteria: {criterion} >= random + 1 pp at 7.0%", f"{pct(v)} vs {pct(random)}",
                                 f">= {pct(random + 0.01)}", v >= random + 0.01))
        for criterion in ("small_final", "small_init_small_final"):
            v = at(criterion, 7.0)
            if v is not None:
                out.append(check(f"criteria: {criterion} < random at 7.0%", f"{pct(v)} vs {pct(random)}", "<",
                                 v < random))
    for density in (7.0, 3.6):
        one = acc(runs.get(f"oneshot_{density}", []), 1)
        it = init[density]
        if one is not None and it is not None:
            out.append(check(f"iterative >= one-shot at {density}%", f"{pct(it)} vs {pct(one)}", ">=", it >= one))
    return out


def plot(path, title, series):
    """Early-stop test accuracy against weights remaining, one line per chain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rounds in series:
        if rounds:  # error bars: the standard deviation over seeds, where averaged
            ax.errorbar([100 * r["density"] for r in rounds], [100 * r["early_stop_test_accuracy"] for r in rounds],
                        yerr=[100 * r.get("spread", {}).get("early_stop_test_accuracy", 0.0) for r in rounds],
                        marker="o", markersize=3, capsize=2, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy at early stop (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(runs, shown, seeds=None):
    root = os.path.join(REPO, FLAGS.output_dir)
    os.makedirs(root, exist_ok=True)
    dense = {name: r[0]["early_stop_test_accuracy"] for name, r in runs.items() if r}
    same_dense = len(set(dense.values())) <= 1
    base = runs.get(BASE, [])
    copies = sum(1 for name, r in runs.items()
                 if name != BASE and r and base and r[0]["wall_time_s"] == base[0]["wall_time_s"])
    shared = f"{copies} of them copies of the lottery-ticket chain's" if copies else "each trained its own"
    dense_line = (f"Dense round (shared): {pct(next(iter(dense.values()), None))}% at early stop; identical in "
                  f"all {len(dense)} chains ({shared})." if same_dense else
                  f"**Dense rounds differ between chains**: {sorted(set(map(pct, dense.values())))}.")
    rounds_at, lenet = ladder(), FLAGS.net == "lenet300_mnist"
    densities = [100.0, *sorted(rounds_at, reverse=True)]
    mask1_rows = [(a, runs.get(BASE if a == "init" else f"mask1_{a}", [])) for a in MASK1]
    mask0_rows = [(a, runs.get(BASE if a == "zero" else f"mask0_{a}", [])) for a in MASK0]
    criteria_rows = [(c, runs.get(c, [])) for c in CRITERIA]
    flagfile, label, paper_steps, _ = NETS[FLAGS.net]
    pruning = (f" Every chain prunes once, to {100 * base[1]['density']:.1f}% of weights (the rates of "
               f"{CONV2_ROUNDS} iterative rounds)." if not lenet and len(base) > 1 else "")
    lines = [f"Command: `{shown}`", "",
             f"{label}, {flagfile}, {FLAGS.train_steps:,} iterations per round (paper: {paper_steps}), evaluation "
             f"every {FLAGS.eval_every}; " + (f"seeds {', '.join(map(str, seeds))}: mean ± standard deviation, every "
                                              "check judged on the means" if seeds else f"seed {FLAGS.seed}") +
             f".{pruning} {dense_line}", ""]
    lines += table("Mask-1 actions (kept weights at each rewind)", mask1_rows, densities, rounds_at=rounds_at) + [""]
    mask0_densities = [d for d in densities if d >= 7.0]
    lines += table("Mask-0 actions (pruned weights)", mask0_rows, mask0_densities, rounds_at=rounds_at) + [""]
    if lenet:
        lines += table("Mask criteria", criteria_rows, densities[:4]) + [""]
        lines += table("Untrained accuracy of each criterion's mask over theta_0", criteria_rows, densities[:4],
                       key="untrained_test_accuracy") + [""]
        lines += ["**One-shot vs iterative** (test accuracy %, early stop)", "", "| weights | iterative | one-shot |",
                  "|---|---|---|"]
        for d in (51.3, 21.1, 7.0, 3.6):
            one = runs.get(f"oneshot_{d}", [])
            density = f"{100 * one[1]['density']:.1f}%" if len(one) > 1 else f"{d}%"
            lines.append(f"| {density} | {pct(acc(base, ROUND[d]))} | {pct(acc(one, 1))} |")
    else:
        lines += table("Untrained accuracy of the mask over the chain's starting weights", mask1_rows + mask0_rows[1:],
                       densities, key="untrained_test_accuracy", rounds_at=rounds_at)
    rows = checks(runs, rounds_at)
    lines += ["", *checks_table((c["claim"], c["measured"], c["needed"], c["met"]) for c in rows)]
    missing = [name for name in chains() if len(runs.get(name, [])) < 2]
    if missing:
        lines += ["", f"Chains without a pruned round yet: {', '.join(missing)}."]
    figures = [("zhou_mask1.png", "Mask-1 actions: the kept weights at each rewind", mask1_rows),
               ("zhou_mask0.png", "Mask-0 actions: the pruned weights", mask0_rows),
               ("zhou_criteria.png", "Mask criteria", criteria_rows)][:3 if lenet else 2]
    for name, title, series in figures:
        plot(os.path.join(root, name), title, series)
        lines += ["", f"![{title}]({name})"]
    write_reproduction(root, {"train_steps": FLAGS.train_steps, "eval_every": FLAGS.eval_every, "checks": rows,
                              "chains": {name: r for name, r in runs.items()}}, "\n".join(lines) + "\n")
    return lines, rows


def main(argv):
    del argv
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        sys.exit(f"reproduce_zhou: error: --seeds: {FLAGS.seeds} are not whole numbers.")
    root = FLAGS.output_dir or NETS[FLAGS.net][3]
    todo = chains()
    unknown = sorted(set(FLAGS.chains) - set(todo))
    if unknown:
        sys.exit(f"reproduce_zhou: error: --chains: unknown {unknown}; choose from {list(todo)}.")
    if FLAGS.chains:
        todo = {k: v for k, v in todo.items() if k in FLAGS.chains}
    per_seed, unfinished, fixed_dir = {}, [], FLAGS.output_dir is not None and not seeds
    mine = set(shard_of("reproduce_zhou", [(s, n) for s in seeds or [FLAGS.seed] for n in todo]))
    for seed in seeds or [FLAGS.seed]:  # the chain functions read the seed and folder from the flags
        FLAGS.seed = seed
        if not fixed_dir:
            FLAGS.output_dir = root + (f"_seed{seed}" if seed else "")
        if not FLAGS.report_only:
            # A shard without the lottery-ticket chain trains a mask-1 chain's dense round itself (the same
            # seed gives the same round, so the results do not depend on how the chains are split).
            failed = train_all({n: v for n, v in todo.items() if (seed, n) in mine}, data_args("reproduce_zhou"))
            if failed:
                sys.exit(f"reproduce_zhou: error: chains {failed} failed (see their .log); re-run to resume.")
        per_seed[seed] = {name: rounds_of(name) for name in chains()}
        unfinished += [n for n in todo if not os.path.exists(os.path.join(REPO, FLAGS.output_dir, n, "summary.json"))]
    if FLAGS.shard and unfinished:
        print(f"this shard's {len(mine)} chains are done; others are not yet. Re-run with --report_only once "
              "every shard has finished to write the report.")
        return
    runs = per_seed[FLAGS.seed]
    if seeds:
        FLAGS.output_dir = root + "_mean"
        runs = {name: mean_rounds([per_seed[s][name] for s in seeds]) for name in chains()}
    lines, rows = report(runs, command_line(), seeds)
    print("\n".join(lines))
    print(f"\n{sum(r['met'] for r in rows)} of {len(rows)} checks met. Report: "
          f"{os.path.join(FLAGS.output_dir, 'reproduction.md')}")


if __name__ == "__main__":
    app.run(main)
