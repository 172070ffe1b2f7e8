"""lt-retrain: retrain any ticket (IMP, supermask, Early-Bird) at full precision, with XLA by default.

    python -m lt_keras.bin.retrain --ticket_dir=runs/quickstart/round_3/ticket \
        --output_dir=runs/retrain --flagfile=flags/lenet300_mnist_dense.flags --data_dir=...

The ticket's model (its masks included) trains with the common training
flags; TensorFlow places it on a GPU when one is visible. ``--strategy``
picks a ``tf.distribute`` strategy (``--batch_size`` is the global batch).
Writes the retrained ticket, history.json, curves.png and summary.json
(``lt_keras.ticket.retrain``); a killed run resumes, a finished one prints.
"""
import json
import os
import shutil
import tempfile

from absl import app, flags, logging

from lt_keras.bin import common_flags
from lt_keras.errors import LtKerasError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    common_flags.define_common_flags(flag_values=flag_values)
    flags.DEFINE_string("ticket_dir", None, "Ticket folder (model.keras, mask.npz, ticket.json) to retrain.",
                        flag_values=flag_values)
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                      "tf.distribute strategy: default (one device), mirrored (local GPUs or --cpu_devices), "
                      "multi_worker (TF_CONFIG).", flag_values=flag_values)
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices (for mirrored runs without GPUs).",
                         lower_bound=1, flag_values=flag_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lt_keras.distribute import is_chief, make_strategy, split_cpu
    from lt_keras.ticket import retrain

    scratch = None
    try:
        with common_flags.user_errors("lt-retrain"):
            if not FLAGS.ticket_dir:
                raise LtKerasError("--ticket_dir: the ticket to retrain is required.")
            common_flags.model_from_ticket(FLAGS.ticket_dir)
            split_cpu(FLAGS.cpu_devices)
            data_cfg, train_cfg = common_flags.data_config(), common_flags.train_config()
            strategy = make_strategy(FLAGS.strategy)
            output_dir = FLAGS.output_dir
            if not is_chief():  # non-chief workers write to a scratch folder, as Keras recommends
                scratch = output_dir = tempfile.mkdtemp(prefix="lt_retrain_worker_")
            run, summary = common_flags.open_run(output_dir, __name__, ticket_dir=os.path.abspath(FLAGS.ticket_dir),
                                                 data=data_cfg, train=train_cfg, strategy=FLAGS.strategy,
                                                 cpu_devices=FLAGS.cpu_devices)
            if summary is None:
                data = data_cfg.load()
                logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
                summary = retrain(run.path, FLAGS.ticket_dir, data, train_cfg, strategy, FLAGS.strategy)
                summary.update(dataset=data.spec.name, data_source=data.source)
                run.write_summary(summary)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"\nretrained {summary['method']} ticket ({100 * summary['density']:.1f}% of weights): test accuracy "
          f"{summary['final_test_accuracy']:.4f} at the end, {summary['early_stop_test_accuracy']:.4f} at the "
          f"early stop (step {summary['early_stop_step']}). Run directory: {FLAGS.output_dir}")


def run():
    common_flags.run_binary(define_flags, main)


if __name__ == "__main__":
    run()
