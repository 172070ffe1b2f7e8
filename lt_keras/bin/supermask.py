"""lt-supermask: learn a mask over frozen random weights (``lt_keras.supermask.learn``), or score masks on
untrained weights (``--from_run``: ``lt_keras.supermask.untrained``).

    python -m lt_keras.bin.supermask --flagfile=flags/lenet300_mnist_supermask.flags \
        --data_dir=path/to/mnist --output_dir=runs/supermask

Writes flags.txt, config.json, history.json, curves.png, summary.json and ``ticket/`` (learning) or the
untrained accuracy per density (``--criterion`` masks of an lt-train run, or an lt-imp ``--from_round``).
"""
import dataclasses
import json
import os

from absl import app, flags, logging

from lt_keras.bin import common_flags, config_flags

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    from lt_keras.supermask import LearnConfig, UntrainedConfig

    common_flags.define_common_flags(flag_values=flag_values)
    common_flags.define_precision_flags(flag_values)
    config_flags.define(LearnConfig, flag_values)
    config_flags.define(UntrainedConfig, flag_values)


def configs():
    """The learn config, and with --from_run the untrained-mask one; config.json's ``supermask`` entry."""
    from lt_keras.supermask import LearnConfig, UntrainedConfig

    learn = config_flags.build(LearnConfig)
    untrained = config_flags.build(UntrainedConfig, from_run=FLAGS.from_run and os.path.abspath(FLAGS.from_run))
    untrained = untrained if untrained.from_run else None
    entry = {**dataclasses.asdict(learn), **(dataclasses.asdict(untrained) if untrained else {})}
    return learn, untrained, json.loads(json.dumps(entry))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    with common_flags.user_errors("lt-supermask"):
        from lt_keras import supermask

        data_cfg, train_cfg = common_flags.data_config(), common_flags.train_config()
        learn, untrained, entry = configs()
        precision = common_flags.search_precision()
        parts = {"precision": precision.describe()} if precision.precision != "fp32" else {}
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg, supermask=entry, **parts)
        if summary is None:
            data = data_cfg.load()
            logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
            if untrained:
                summary = supermask.untrained(FLAGS.model, data, untrained, FLAGS.seed)
            else:
                summary = supermask.learn(run.path, FLAGS.model, data, train_cfg, learn, precision)
            summary.update(model=FLAGS.model, dataset=data.spec.name, data_source=data.source)
            run.write_summary(summary)
    print(json.dumps(summary, indent=2, sort_keys=True))
    if summary["mode"] == "learn":
        line = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in summary["evaluations"].items())
        print(f"\nsupermask test accuracy: {line}; ticket keeps {100 * summary['ticket_density']:.1f}% "
              f"of the weights. Run directory: {run.path}")
    else:
        for row in summary["rows"]:
            print(f"untrained, {100 * row['density']:5.1f}% kept ({row['source']}): {row['accuracy']:.4f}")
        print(f"Run directory: {run.path}")


def run():
    common_flags.run_binary(define_flags, main)


if __name__ == "__main__":
    run()
