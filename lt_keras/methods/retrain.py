"""lt-retrain: retrain any ticket (IMP, supermask, Early-Bird) at full precision, with XLA where faster, on a
``tf.distribute`` strategy."""
import dataclasses
import json
import os
import shutil

import numpy as np
from absl import logging

from lt_keras._keras import keras, tf
from lt_keras.distribute import STRATEGIES, make_strategy, split_cpu
from lt_keras.errors import ConfigError
from lt_keras.io_utils import atomic_write_json
from lt_keras.layers import masked_layers
from lt_keras.mask import mask_key
from lt_keras.methods.base import Method, RunSpec, config_dict
from lt_keras.options import option
from lt_keras.report import plot_curves
from lt_keras.ticket import load_ticket, write_ticket
from lt_keras.training import fit


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """The ticket to retrain and the devices it trains on (``spec.train.batch_size`` is the global batch)."""

    ticket_dir: str = option(None, "Ticket folder (model.keras, mask.npz, ticket.json) to retrain.")
    strategy: str = option("default", "tf.distribute strategy: default (one device), mirrored (local GPUs or "
                           "--cpu_devices), multi_worker (TF_CONFIG).", choices=STRATEGIES)
    cpu_devices: int = option(1, "Split the CPU into N logical devices (for mirrored runs without GPUs).",
                              lower_bound=1)

    def __post_init__(self):
        if not self.ticket_dir:
            raise ConfigError("ticket_dir", "the ticket to retrain is required.")
        object.__setattr__(self, "ticket_dir", os.path.abspath(self.ticket_dir))
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"{self.strategy!r} is not one of {list(STRATEGIES)}.")


class Retrain(Method):
    """Retrain ``config.ticket_dir``: the retrained ``ticket/``, history.json, curves.png; a killed run resumes
    from its last evaluation (``backup/``)."""

    binary = "lt-retrain"
    Config = RetrainConfig
    default_model = None  # the ticket's

    def config_entry(self, spec: RunSpec) -> dict:
        c = self.config
        return config_dict(ticket_dir=c.ticket_dir, data=spec.data, train=spec.train, strategy=c.strategy,
                           cpu_devices=c.cpu_devices)

    def resolve(self, spec: RunSpec) -> RunSpec:
        split_cpu(self.config.cpu_devices)  # before anything initializes TensorFlow's devices
        self.strategy = make_strategy(self.config.strategy)  # before other ops (multi-worker needs it first)
        return super().resolve(spec)

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        return retrain(run_dir, self.config.ticket_dir, data, spec.train, self.strategy, self.config.strategy)

    def report(self, summary, run_dir) -> str:
        return (f"{json.dumps(summary, indent=2, sort_keys=True)}\n\nretrained {summary['method']} ticket "
                f"({100 * summary['density']:.1f}% of weights): test accuracy {summary['final_test_accuracy']:.4f} "
                f"at the end, {summary['early_stop_test_accuracy']:.4f} at the early stop (step "
                f"{summary['early_stop_step']}). Run directory: {run_dir}")


def retrain(output_dir, ticket_dir, data, train, strategy=None, strategy_name="default") -> dict:
    """Retrain the ticket in ``ticket_dir`` at fp32 (XLA where faster) into ``output_dir``: lt-retrain as one call.

    Writes the retrained ``ticket/``, history.json and curves.png; a killed
    call resumes from its last evaluation (``backup/``) when made again.
    ``strategy`` is a ``tf.distribute`` strategy (``--batch_size`` is then
    the global batch). The summary reports ``pruned_weights_nonzero``
    (masked weights must stay exactly zero) and what the step really ran.
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(train.seed)
    on_cpus = strategy.num_replicas_in_sync > 1 and not tf.config.list_logical_devices("GPU")
    if on_cpus and train.jit_compile is not False:
        # XLA cannot compile a step whose replicas' variables live on other logical CPU devices.
        logging.warning("XLA is off: %d replicas on logical CPU devices cannot share one XLA program.",
                        strategy.num_replicas_in_sync)
        train = dataclasses.replace(train, jit_compile=False)
    with strategy.scope():
        ticket = load_ticket(ticket_dir)
        model = ticket.model
        expected = tuple(model.input_shape[1:])
        if expected != tuple(data.input_shape):
            raise ConfigError("dataset", f"ticket {ticket_dir!r} takes inputs of shape {expected}, but "
                               f"{data.spec.name} has {tuple(data.input_shape)}.")
        backup = os.path.join(output_dir, "backup")
        result = fit(model, data, train, output_dir=output_dir, backup_dir=backup)
    pruned_nonzero = 0
    for layer in masked_layers(model):
        if layer.mask0 == "zero":
            kernel = layer.masked_kernel(training=False).numpy()
            pruned_nonzero += int(np.count_nonzero(kernel[ticket.mask[mask_key(layer)] == 0]))
    atomic_write_json(os.path.join(output_dir, "history.json"), result.history)
    plot_curves(result.history, os.path.join(output_dir, "curves.png"))
    write_ticket(os.path.join(output_dir, "ticket"), model, ticket.mask,
                 dataclasses.replace(ticket.info, retrained_from=os.path.abspath(ticket_dir)))
    shutil.rmtree(backup, ignore_errors=True)
    return {
        "ticket": os.path.abspath(ticket_dir),
        "method": ticket.info.method,
        "found_at_precision": ticket.info.found_at_precision,
        "density": ticket.mask.density(),
        "pruned_weights_nonzero": pruned_nonzero,
        "strategy": strategy_name,
        "replicas": strategy.num_replicas_in_sync,
        "devices": sorted({d.device_type for d in tf.config.list_logical_devices()}),
        "jit_compile": bool(model.jit_compile),  # what the compiled step ran, not what was asked
        **{k: v for k, v in result.to_dict().items() if k != "history"},
    }
