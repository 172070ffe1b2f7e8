"""lt-imp: find lottery tickets by iterative (or one-shot) magnitude pruning.

    python -m lt_keras.bin.imp --flagfile=flags/quickstart.flags

Writes round_<k>/ (mask, metrics, ticket) per round, summary.json and
report.png into --output_dir. Re-running the same command resumes after the
last complete round; on a finished run it trains nothing and prints the table.
"""
from absl import app, flags, logging

from lt_keras.bin import common_flags, config_flags

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    from lt_keras.imp import ImpConfig

    common_flags.define_common_flags(flag_values=flag_values)
    common_flags.define_precision_flags(flag_values)
    config_flags.define(ImpConfig, flag_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lt_keras.imp import ImpConfig, search
    from lt_keras.models import build_model
    from lt_keras.report import plot_rounds, round_table

    with common_flags.user_errors("lt-imp"):
        data_cfg, train_cfg = common_flags.data_config(), common_flags.train_config()
        imp_cfg = config_flags.build(ImpConfig)
        precision = common_flags.search_precision()
        parts = {"precision": precision.describe()} if precision.precision != "fp32" else {}
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg, imp=imp_cfg, **parts)
        if summary is not None:
            results = summary["rounds"]
        else:
            data = data_cfg.load()
            logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
            results = search(run.path, lambda: build_model(FLAGS.model, data.input_shape, data.num_classes),
                              data, imp_cfg, train_cfg, precision=precision)
            plot_rounds(results, run.file("report.png"), title=f"{FLAGS.model} on {data.spec.name}: IMP, criterion "
                        f"{imp_cfg.criterion}, rewind {imp_cfg.rewind}")
            run.write_summary({"model": FLAGS.model, "dataset": data.spec.name, "data_source": data.source,
                               "rounds": results})
    print(round_table(results))
    print(f"\nRun directory: {run.path} (report.png, summary.json, round_<k>/ticket)")


def run():
    common_flags.run_binary(define_flags, main)


if __name__ == "__main__":
    run()
