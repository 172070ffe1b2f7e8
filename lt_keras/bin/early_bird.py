"""lt-early-bird: find Early-Bird tickets early in training, slim them, retrain, and count the FLOPs.

    python -m lt_keras.bin.early_bird --flagfile=flags/vgg16_cifar100_early_bird.flags \
        --data_dir=path/to/cifar-100-python --output_dir=runs/eb

Trains a BatchNorm network with an L1 penalty on BN scale factors; after
every epoch computes the channel mask for each of ``--prune_ratios`` and
declares each ratio's Early-Bird ticket when its newest mask is within
``--epsilon`` of the others in the FIFO of ``--queue_length``. Each ticket
is slimmed (``eb_p<ratio>/ticket``: the smaller network at the EB-epoch
weights) and retrained at fp32 with XLA from the EB weights (the schedule
resumed at the EB epoch) or from scratch. The summary compares total
training FLOPs (search + retrain) with the LT one-shot baseline (full dense
training, prune at the same ratio, full retraining), counted by
``lt_keras.flops``; ``--run_baseline`` also trains that baseline for its
accuracy. The pipeline is one library call, ``lt_keras.early_bird.search``.
"""
import dataclasses

from absl import app, flags, logging

from lt_keras.bin import common_flags, config_flags

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    from lt_keras.early_bird import EarlyBirdConfig

    common_flags.define_common_flags(default_model="vgg11_bn", flag_values=flag_values)
    common_flags.define_precision_flags(flag_values)
    config_flags.define(EarlyBirdConfig, flag_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common_flags.user_errors("lt-early-bird"):
        from lt_keras import early_bird

        data_cfg, train_cfg = common_flags.data_config(), common_flags.train_config()
        config, precision = config_flags.build(early_bird.EarlyBirdConfig), common_flags.search_precision()
        parts = {"precision": precision.describe()} if precision.precision != "fp32" else {}
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg, early_bird=dataclasses.asdict(config), **parts)
        if summary is None:
            data = data_cfg.load()
            logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
            summary = early_bird.search(run.path, FLAGS.model, data, train_cfg, config, precision)
    print(f"{table(summary)}\n\nRun directory: {run.path} (summary.json, eb_distances.png, eb_p<ratio>/ticket)")


def table(summary):
    rows = [("ratio", "EB epoch", "retrain acc", "baseline acc", "EB GFLOPs", "LT GFLOPs", "FLOPs saved")]
    for key, r in summary["ratios"].items():
        rows.append((key, str(r.get("eb_epoch", "-")), _pct(r.get("retrain_test_accuracy")),
                     _pct(r.get("baseline_test_accuracy")), _g(r.get("eb_total_flops")), _g(r.get("lt_total_flops")),
                     f"{r['flops_ratio']:.2f}x" if r.get("flops_ratio") else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def _g(v):
    return "-" if v is None else f"{v / 1e9:,.0f}"


def run():
    common_flags.run_binary(define_flags, main)


if __name__ == "__main__":
    run()
