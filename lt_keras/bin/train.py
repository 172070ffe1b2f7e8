"""lt-train: train a (dense or masked) model into a run directory.

    python -m lt_keras.bin.train --flagfile=flags/lenet300_mnist_dense.flags \
        --data_dir=path/to/mnist --output_dir=runs/dense

Writes flags.txt, config.json, versions.json, init_weights.npz, history.json, model.keras,
TensorBoard summaries and summary.json. Re-running a finished run directory
trains nothing and prints its summary.
"""
import json

from absl import app, flags, logging

from lt_keras.bin import common_flags

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    common_flags.define_common_flags(flag_values=flag_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    with common_flags.user_errors("lt-train"):
        data_cfg, train_cfg = common_flags.data_config(), common_flags.train_config()
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg)
        if summary is None:
            from lt_keras.training import train

            data = data_cfg.load()
            logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
            summary = train(run.path, FLAGS.model, data, train_cfg)
            run.write_summary(summary)
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(
        f"\n{summary['model']} on {summary['dataset']}: test accuracy {summary['final_test_accuracy']:.4f} "
        f"at the end ({summary['total_steps']} steps); early stop at step {summary['early_stop_step']} "
        f"with test accuracy {summary['early_stop_test_accuracy']:.4f}. Run directory: {run.path}"
    )


def run():
    common_flags.run_binary(define_flags, main)


if __name__ == "__main__":
    run()
