"""lt-supermask: learn a supermask over frozen random weights (``learn``), or score criterion masks on untrained
weights (``untrained``), as a run directory that resumes."""
import dataclasses
import json
import os
import shutil

from lt_keras._keras import keras
from lt_keras.errors import ConfigError
from lt_keras.io_utils import atomic_save_model, atomic_write_json, load_weights
from lt_keras.layers import masked_layers
from lt_keras.mask import Mask, mask_key, pattern_keys
from lt_keras.methods.base import Method, RunSpec
from lt_keras.models import build_model
from lt_keras.patterns import SparsityPattern, check_masks
from lt_keras.precision import SearchPrecision
from lt_keras.report import plot_curves
from lt_keras.supermask import (LearnConfig, MaskDensityLogger, UntrainedConfig, criterion_mask, evaluate,
                                expected_density, hard_mask, init_weights, to_ticket,
                                untrained_accuracy)
from lt_keras.ticket import TicketInfo, write_ticket
from lt_keras.training import fit


@dataclasses.dataclass(frozen=True)
class SupermaskConfig:
    """A learned supermask (``learn``), or, with ``untrained.from_run``, masks scored untrained."""

    learn: LearnConfig = LearnConfig()
    untrained: UntrainedConfig = UntrainedConfig()

    def __post_init__(self):
        if self.untrained.from_run:  # a run moved or re-run elsewhere is still the same source
            object.__setattr__(self, "untrained", dataclasses.replace(
                self.untrained, from_run=os.path.abspath(self.untrained.from_run)))


class Supermask(Method):
    """A supermask of ``spec.model``: history.json, curves.png, model.keras and ``ticket/``; or, from a run,
    the untrained accuracy of its masks at each density."""

    binary = "lt-supermask"
    Config = SupermaskConfig
    config_key = "supermask"
    searches = True

    def config_entry(self, spec: RunSpec) -> dict:
        entry = super().config_entry(spec)
        untrained = self.config.untrained
        entry["supermask"] = {**entry["supermask"]["learn"],
                              **(entry["supermask"]["untrained"] if untrained.from_run else {})}
        return entry

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        if self.config.untrained.from_run:
            return untrained(spec.model, data, self.config.untrained, spec.train.seed)
        return learn(run_dir, spec.model, data, spec.train, self.config.learn, spec.precision)

    def report(self, summary, run_dir) -> str:
        lines = [json.dumps(summary, indent=2, sort_keys=True)]
        if summary["mode"] == "learn":
            line = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in summary["evaluations"].items())
            lines.append(f"\nsupermask test accuracy: {line}; ticket keeps {100 * summary['ticket_density']:.1f}% "
                         f"of the weights. Run directory: {run_dir}")
        else:
            for row in summary["rows"]:
                lines.append(f"untrained, {100 * row['density']:5.1f}% kept ({row['source']}): "
                             f"{row['accuracy']:.4f}")
            lines.append(f"Run directory: {run_dir}")
        return "\n".join(lines)


def learn(output_dir, model_name, data, train, config: LearnConfig = LearnConfig(), precision=None) -> dict:
    """Learn a supermask over frozen weights of ``model_name`` and write it as a ticket: the method as one call.

    Writes into ``output_dir``: history.json, curves.png, model.keras and
    ``ticket/`` (the frozen fp32 weights and the final hard mask); checkpoints
    at every evaluation (``backup/``), so a killed call resumes bit-identically
    when made again. ``precision`` (a ``SearchPrecision``) fake-quantizes the
    search; the ticket is fp32. Returns the summary (evaluations, densities).
    """
    precision = precision or SearchPrecision()
    keras.utils.set_random_seed(train.seed)
    model = build_model(model_name, data.input_shape, data.num_classes, **config.layer_options(train.seed))
    init_weights(model, config.weight_init, seed=train.seed)
    model = precision.to_search(model)
    backup = os.path.join(output_dir, "backup")
    result = fit(model, data, train, output_dir=output_dir, callbacks=[MaskDensityLogger()], backup_dir=backup)
    atomic_write_json(os.path.join(output_dir, "history.json"), result.history)
    plot_curves(result.history, os.path.join(output_dir, "curves.png"))
    test = data.eval_dataset("test")
    if config.estimator == "bernoulli":
        evaluations = {"sampled": evaluate(model, test, "sampled", config.eval_samples),
                       "expected": evaluate(model, test, "expected")}
    else:
        evaluations = {"topk": evaluate(model, test, "topk")}
    model = precision.to_fp32(model)
    atomic_save_model(model, os.path.join(output_dir, "model.keras"))
    mask = hard_mask(model)
    pattern = SparsityPattern.parse(config.sparsity_pattern)
    check_masks(mask, pattern, pattern_keys(model), "supermask")
    info = TicketInfo("supermask", precision.precision, {
        "estimator": config.estimator, "weight_init": config.weight_init,
        "dynamic_weight_rescaling": config.dynamic_weight_rescaling, "source_run": os.path.abspath(output_dir),
        **({"sparsity_pattern": pattern.text} if pattern.structured else {}),
        **precision.bits})
    write_ticket(os.path.join(output_dir, "ticket"), to_ticket(model), mask, info)
    shutil.rmtree(backup, ignore_errors=True)
    return {"mode": "learn", "expected_density_at_end": expected_density(model), "ticket_density": mask.density(),
            "evaluations": evaluations,
            "test_accuracy": evaluations.get("sampled", evaluations.get("topk"))["accuracy"],
            **{k: v for k, v in result.to_dict().items() if k != "history"}}


def untrained(model_name, data, config: UntrainedConfig, seed=0) -> dict:
    """Test accuracy of masks on untrained weights (Zhou et al.'s supermask finding), no training.

    From an lt-train run (``config.from_run``): ``config.criterion`` of its
    initial and final weights at each of ``config.densities``; from an lt-imp
    run with ``config.from_round``: that round's mask. The kept weights start
    per ``config.mask1``. Returns ``rows`` (density, source, accuracy).
    """
    source = config.from_run
    if source is None:
        raise ConfigError("from_run", "untrained masks need a run to take weights (and masks) from.")
    init_path = os.path.join(source, "init_weights.npz")
    if not os.path.exists(init_path):
        raise ConfigError("from_run", f"{source}: no init_weights.npz (expected an lt-train or lt-imp run).")
    init = load_weights(init_path)
    test = data.eval_dataset("test")

    def fresh():
        model = build_model(model_name, data.input_shape, data.num_classes)
        try:
            model.set_weights(init)
        except ValueError as e:
            raise ConfigError("from_run", f"{source}: its weights do not fit --model={model_name}: {e}") from None
        return model

    rows = []
    if config.from_round is not None:
        mask_path = os.path.join(source, f"round_{config.from_round}", "mask.npz")
        if not os.path.exists(mask_path):
            raise ConfigError("from_round", f"{mask_path} does not exist (is the round complete?).")
        mask = Mask.load(mask_path)
        rows.append({"density": mask.density(), "source": f"round_{config.from_round}",
                     "accuracy": untrained_accuracy(fresh(), mask, config.mask1, test, seed)})
    else:
        final_path = os.path.join(source, "model.keras")
        if not os.path.exists(final_path):
            raise ConfigError("from_run", f"{source}: no model.keras (the trained weights); is the run finished?")
        final = {mask_key(l): l.kernel.numpy() for l in masked_layers(keras.models.load_model(final_path))}
        initial = {mask_key(l): l.kernel.numpy() for l in masked_layers(fresh())}
        for density in config.densities:
            mask = criterion_mask(initial, final, config.criterion, density, seed)
            rows.append({"density": mask.density(), "keep_per_layer": density, "source": config.criterion,
                         "accuracy": untrained_accuracy(fresh(), mask, config.mask1, test, seed)})
    return {"mode": "untrained", "criterion": config.criterion,
            "mask1": config.mask1, "rows": rows, "best_accuracy": max(r["accuracy"] for r in rows)}
