"""lt-retrain: retrain any ticket (IMP, supermask, Early-Bird) at full precision, with XLA where faster, on the
run's ``tf.distribute`` strategy (``spec.devices``, as every method)."""
import dataclasses
import json
import os
import shutil

import numpy as np

from lt_keras._keras import keras, tf
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
    """The ticket to retrain."""

    ticket_dir: str = option(None, "Ticket folder (model.keras, mask.npz, ticket.json) to retrain.")

    def __post_init__(self):
        if not self.ticket_dir:
            raise ConfigError("ticket_dir", "the ticket to retrain is required.")
        object.__setattr__(self, "ticket_dir", os.path.abspath(self.ticket_dir))


class Retrain(Method):
    """Retrain ``config.ticket_dir``: the retrained ``ticket/``, history.json, curves.png; a killed run resumes
    from its last evaluation (``backup/``)."""

    binary = "lt-retrain"
    Config = RetrainConfig
    default_model = None  # the ticket's

    def config_entry(self, spec: RunSpec) -> dict:
        return config_dict(ticket_dir=self.config.ticket_dir, data=spec.data, train=spec.train,
                           strategy=spec.devices.strategy, cpu_devices=spec.devices.cpu_devices)

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        return retrain(run_dir, self.config.ticket_dir, data, spec.train)

    def report(self, summary, run_dir) -> str:
        return (f"{json.dumps(summary, indent=2, sort_keys=True)}\n\nretrained {summary['method']} ticket "
                f"({100 * summary['density']:.1f}% of weights): test accuracy {summary['final_test_accuracy']:.4f} "
                f"at the end, {summary['early_stop_test_accuracy']:.4f} at the early stop (step "
                f"{summary['early_stop_step']}). Run directory: {run_dir}")


def retrain(output_dir, ticket_dir, data, train) -> dict:
    """Retrain the ticket in ``ticket_dir`` at fp32 (XLA where faster) into ``output_dir``: lt-retrain as one call.

    Writes the retrained ``ticket/``, history.json and curves.png; a killed
    call resumes from its last evaluation (``backup/``) when made again.
    It trains on the ``tf.distribute`` strategy in scope (``train.batch_size``
    is the global batch). The summary reports ``pruned_weights_nonzero``
    (masked weights must stay exactly zero) and what the step really ran.
    """
    keras.utils.set_random_seed(train.seed)
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
        "devices": sorted({d.device_type for d in tf.config.list_logical_devices()}),
        "jit_compile": bool(model.jit_compile),  # what the compiled step ran, not what was asked
        **{k: v for k, v in result.to_dict().items() if k != "history"},
    }
