"""lt-retrain: retrain any ticket (IMP, supermask, Early-Bird) at full precision, with XLA by default.

    python -m lt_keras.bin.retrain --ticket_dir=runs/quickstart/round_3/ticket \
        --output_dir=runs/retrain --flagfile=flags/lenet300_mnist_dense.flags --data_dir=...

The ticket's model (its masks included) trains with the common training
flags; TensorFlow places it on a GPU when one is visible. ``--strategy``
picks a ``tf.distribute`` strategy (``--batch_size`` is the global batch).
Writes the retrained ticket (``ticket/``), history.json, curves.png and
summary.json. A killed run continues from its last evaluation (Keras
BackupAndRestore); a finished one trains nothing and prints its summary.
"""
import dataclasses
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from absl import app, flags, logging

from lt_keras.bin import common_flags
from lt_keras.errors import LtKerasError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    common_flags.define_common_flags(flag_values=flag_values)
    flags.DEFINE_string("ticket_dir", None, "Ticket folder (model.keras, mask.npz, ticket.json) to retrain.", flag_values=flag_values)
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                      "tf.distribute strategy: default (one device), mirrored (local GPUs or --cpu_devices), "
                      "multi_worker (TF_CONFIG).", flag_values=flag_values)
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices (for mirrored runs without GPUs).",
                         lower_bound=1, flag_values=flag_values)


def retrain(run, ticket_dir, data, train_cfg, strategy):
    from lt_keras._keras import keras, tf
    from lt_keras.layers import masked_layers
    from lt_keras.mask import mask_key
    from lt_keras.io_utils import atomic_write_json
    from lt_keras.report import plot_curves
    from lt_keras.ticket import load_ticket, write_ticket
    from lt_keras.training import fit

    keras.utils.set_random_seed(train_cfg.seed)
    on_cpus = strategy.num_replicas_in_sync > 1 and not tf.config.list_logical_devices("GPU")
    if on_cpus and train_cfg.jit_compile is not False:
        # XLA cannot compile a step whose replicas' variables live on other logical CPU devices.
        logging.warning("XLA is off: %d replicas on logical CPU devices cannot share one XLA program.",
                        strategy.num_replicas_in_sync)
        train_cfg = dataclasses.replace(train_cfg, jit_compile=False)
    with strategy.scope():
        ticket = load_ticket(ticket_dir)
        model = ticket.model
        expected = tuple(model.input_shape[1:])
        if expected != tuple(data.input_shape):
            raise LtKerasError(f"ticket {ticket_dir!r} takes inputs of shape {expected}, but --dataset="
                               f"{data.spec.name} has {tuple(data.input_shape)}.")
        result = fit(model, data, train_cfg, output_dir=run.path, backup_dir=run.file("backup"))
    pruned_nonzero = 0  # masked weights must stay exactly zero through training
    for layer in masked_layers(model):
        if layer.mask0 == "zero":
            kernel = layer.masked_kernel(training=False).numpy()
            pruned_nonzero += int(np.count_nonzero(kernel[ticket.mask[mask_key(layer)] == 0]))
    atomic_write_json(run.file("history.json"), result.history)
    plot_curves(result.history, run.file("curves.png"))
    info = {k: v for k, v in ticket.info.items() if k not in ("density", "layer_density", "versions")}
    write_ticket(run.file("ticket"), model, ticket.mask,
                 {**info, "retrained_from": os.path.abspath(ticket_dir), "precision": "fp32"})
    shutil.rmtree(run.file("backup"), ignore_errors=True)
    return {
        "ticket": os.path.abspath(ticket_dir),
        "method": ticket.info.get("method"),
        "found_at_precision": ticket.info.get("found_at_precision", ticket.info.get("precision", "fp32")),
        "density": ticket.mask.density(),
        "pruned_weights_nonzero": pruned_nonzero,
        "strategy": FLAGS.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "devices": sorted({d.device_type for d in tf.config.list_logical_devices()}),
        "jit_compile": bool(model.jit_compile),  # what the compiled step ran, not what was asked
        **{k: v for k, v in result.to_dict().items() if k != "history"},
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lt_keras.distribute import is_chief, make_strategy, split_cpu

    scratch = None
    try:
        with common_flags.user_errors("lt-retrain"):
            if not FLAGS.ticket_dir:
                raise LtKerasError("--ticket_dir: the ticket to retrain is required.")
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
                summary = retrain(run, FLAGS.ticket_dir, data, train_cfg, strategy)
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
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
