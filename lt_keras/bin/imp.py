"""lt-imp: find lottery tickets by iterative (or one-shot) magnitude pruning.

    python -m lt_keras.bin.imp --flagfile=flags/quickstart.flags

Writes round_<k>/ (mask, metrics, ticket) per round, summary.json and
report.png into --output_dir. Re-running the same command resumes after the
last complete round; on a finished run it trains nothing and prints the table.
"""
import sys

from absl import app, flags, logging

from lt_keras.bin import common_flags
from lt_keras.errors import LtKerasError

common_flags.define_common_flags()
common_flags.define_precision_flags()
flags.DEFINE_integer("rounds", 3, "Pruning rounds after the dense round 0.")
flags.DEFINE_float("target_density", None, "One-shot: prune once to this fraction of weights (overrides --rounds).")
flags.DEFINE_string("allocation", "layerwise", "layerwise (rates by layer kind) or global (one pooled rate).")
flags.DEFINE_float("prune_rate_fc", 0.2, "Per-round pruning rate of hidden dense layers.")
flags.DEFINE_float("prune_rate_conv", 0.1, "Per-round pruning rate of convolutions.")
flags.DEFINE_float("prune_rate_output", 0.1, "Per-round pruning rate of the output layer.")
flags.DEFINE_float("prune_rate", 0.2, "Per-round pooled rate with --allocation=global.")
flags.DEFINE_string("rewind", "init", "init (theta_0), step:K (weights after K steps) or none.")
if "criterion" not in flags.FLAGS:  # lt-supermask defines the same flags (tests import both)
    flags.DEFINE_string("criterion", "large_final", "Mask criterion (Zhou et al.).")
    flags.DEFINE_string("mask1", "init", "Mask-1 action for the kept weights at rewind.")
flags.DEFINE_bool("mask1_rescaling", False, "Multiply the kept weights by numel / ones of each layer's mask "
                  "(Zhou et al.'s *_rescaling variants).")
flags.DEFINE_string("mask0", "zero", "Mask-0 action for pruned weights: zero, freeze_init (keep theta_0), "
                    "freeze_init_zero_mask, freeze_init_zero_all, freeze_init_zero_reshuffle, freeze_init_zero_rev "
                    "(see lt_keras.actions).")
flags.DEFINE_list("controls", [], "Baselines trained every round: random_reinit, random_prune.")
FLAGS = flags.FLAGS


def imp_config():
    from lt_keras.imp import ImpConfig

    return ImpConfig(
        rounds=FLAGS.rounds, target_density=FLAGS.target_density, allocation=FLAGS.allocation,
        prune_rate_fc=FLAGS.prune_rate_fc, prune_rate_conv=FLAGS.prune_rate_conv,
        prune_rate_output=FLAGS.prune_rate_output, prune_rate=FLAGS.prune_rate, rewind=FLAGS.rewind,
        criterion=FLAGS.criterion, mask1=FLAGS.mask1, mask1_rescaling=FLAGS.mask1_rescaling, mask0=FLAGS.mask0,
        controls=tuple(FLAGS.controls),
    ).validate()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lt_keras.imp import run_imp
    from lt_keras.models import build_model
    from lt_keras.report import plot_rounds, round_table

    with common_flags.user_errors("lt-imp"):
        data_cfg, train_cfg, imp_cfg = common_flags.data_config(), common_flags.train_config(), imp_config()
        precision = common_flags.search_precision()
        parts = {"precision": precision.describe()} if precision.precision != "fp32" else {}
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg, imp=imp_cfg, **parts)
        if summary is not None:
            results = summary["rounds"]
        else:
            data = data_cfg.load()
            logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
            results = run_imp(run.path, lambda: build_model(FLAGS.model, data.input_shape, data.num_classes),
                              data, imp_cfg, train_cfg, precision=precision)
            plot_rounds(results, run.file("report.png"))
            run.write_summary({"model": FLAGS.model, "dataset": data.spec.name, "data_source": data.source,
                               "rounds": results})
    print(round_table(results))
    print(f"\nRun directory: {run.path} (report.png, summary.json, round_<k>/ticket)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
