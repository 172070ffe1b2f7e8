"""lt-early-bird: find Early-Bird tickets (You et al. 2020), slim them, retrain them, and count the FLOPs.

Trains with the BN L1 penalty (``spec.train.epochs`` is the schedule),
detects each ratio's ticket (``lt_keras.early_bird``), writes it (slimmed,
fp32) to ``eb_p<ratio>/ticket``, retrains it, optionally trains the LT
one-shot baseline, and counts FLOPs against it. Every phase checkpoints into
``backup_*`` folders of the run directory and resumes when run again; they
are removed once ``summary.json`` is written.
"""
import dataclasses
import glob
import os
import shutil

from absl import logging

from lt_keras._keras import keras, tf
from lt_keras.early_bird import EarlyBirdCallback, EarlyBirdConfig, add_bn_l1, compute_mask, slim
from lt_keras.errors import ConfigError
from lt_keras.flops import training_flops_per_step
from lt_keras.io_utils import atomic_write_json
from lt_keras.mask import Mask
from lt_keras.methods.base import Method, RunSpec
from lt_keras.models import build_model
from lt_keras.report import save_figure
from lt_keras.ticket import TicketInfo, write_ticket
from lt_keras.training import fit, saved_evaluations


class EarlyBird(Method):
    """Early-Bird tickets of ``spec.model`` (``EarlyBirdConfig``): eb_p<ratio>/ticket per emerged ratio,
    eb_distances.png / .json, search_history.json, summary.json."""

    binary = "lt-early-bird"
    Config = EarlyBirdConfig
    config_key = "early_bird"
    default_model = "vgg11_bn"
    searches = True

    def resolve(self, spec: RunSpec) -> RunSpec:
        if spec.train.epochs is None:
            raise ConfigError("epochs", "Early-Bird works in epochs; set epochs, not train_steps.")
        return super().resolve(spec)

    def execute(self, run_dir, spec: RunSpec, data) -> dict:
        output_dir, model_name, train_cfg, config = run_dir, spec.model, spec.train, self.config
        precision = spec.precision
        num_train, epochs = data.num_train, train_cfg.epochs
        spe = train_cfg.steps_per_epoch(num_train)

        def build():
            return build_model(model_name, data.input_shape, data.num_classes)

        def search_build():  # the search runs at --precision; tickets, retraining and baselines are fp32
            return precision.to_search(build())

        model, callback, search_result = _detect(output_dir, search_build, data, train_cfg, config)
        search_time = search_result.wall_time_s  # all of its processes' training seconds (a resumed search too)
        searched_epochs = len(search_result.history)
        dense_step = training_flops_per_step(build(), train_cfg.batch_size)
        summary = {"schedule_epochs": epochs, "search_epochs": searched_epochs, "search_wall_time_s": search_time,
                   "dense_flops_per_step": dense_step, "steps_per_epoch": spe, "retrain_from": config.retrain_from,
                   "granularity": config.granularity, "search_final_test_accuracy": search_result.final_test_accuracy,
                   "ratios": {}}
        dense_baseline = None
        for ratio in config.prune_ratios:
            entry = {"emerged": ratio in callback.emerged}
            summary["ratios"][str(ratio)] = entry
            if ratio not in callback.emerged:
                logging.warning("no Early-Bird ticket at ratio %s within %d epochs.", ratio, searched_epochs)
                continue
            eb_epoch = callback.emerged[ratio]
            ticket_model, ticket_mask, eb_mask = _ticket_for(model, callback, ratio, config, precision)
            folder = os.path.join(output_dir, f"eb_p{ratio}")
            info = TicketInfo("early_bird", precision.precision, {
                "prune_ratio": ratio, "eb_epoch": eb_epoch, "granularity": config.granularity,
                "slimmed": config.granularity == "channel", "parameters": int(ticket_model.count_params()),
                **precision.bits})
            write_ticket(os.path.join(folder, "ticket"), ticket_model, ticket_mask, info)
            eb_mask.save(os.path.join(folder, "eb_mask.npz"))
            slim_step = training_flops_per_step(ticket_model, train_cfg.batch_size)
            if config.granularity == "weight":
                slim_step = dense_step  # unstructured masks run dense kernels
            retrain_epochs = epochs - eb_epoch if config.retrain_from == "eb" else epochs
            entry.update(eb_epoch=eb_epoch, eb_fraction_of_schedule=eb_epoch / epochs,
                         ticket_parameters=int(ticket_model.count_params()), ticket_flops_per_step=slim_step,
                         retrain_epochs=retrain_epochs)
            entry["eb_total_flops"] = (eb_epoch * dense_step + retrain_epochs * slim_step) * spe
            entry["lt_total_flops"] = (epochs * dense_step + epochs * slim_step) * spe
            entry["flops_ratio"] = entry["lt_total_flops"] / entry["eb_total_flops"]
            if ratio in config.retrain_ratios and retrain_epochs > 0:
                _fresh_session()
                keras.utils.set_random_seed(train_cfg.seed)
                retrain_model = ticket_model
                if config.retrain_from == "scratch":
                    retrain_model = keras.models.clone_model(ticket_model)  # same shapes, fresh initializers
                    ticket_mask.apply_to(retrain_model)
                phase = schedule(train_cfg, num_train, retrain_epochs,
                                 start_epoch=eb_epoch if config.retrain_from == "eb" else 0)
                result = fit(retrain_model, data, phase, output_dir=os.path.join(folder, "retrain"),
                             backup_dir=os.path.join(folder, BACKUP + "retrain"))
                entry.update(retrain_test_accuracy=result.final_test_accuracy, retrain_wall_time_s=result.wall_time_s)
                atomic_write_json(os.path.join(folder, "retrain_history.json"), result.history)
            if config.run_baseline and ratio in config.retrain_ratios:
                if dense_baseline is None:
                    dense_baseline = _train_dense_baseline(output_dir, data, train_cfg, config, build)
                entry.update(_baseline_retrain(data, train_cfg, config, ratio, build, dense_baseline, folder))
        return summary



    def after_summary(self, run_dir):
        for folder in glob.glob(os.path.join(run_dir, "**", BACKUP + "*"), recursive=True):
            shutil.rmtree(folder, ignore_errors=True)  # complete: no phase resumes any more

    def report(self, summary, run_dir) -> str:
        rows = [("ratio", "EB epoch", "retrain acc", "baseline acc", "EB GFLOPs", "LT GFLOPs", "FLOPs saved")]
        for key, r in summary["ratios"].items():
            rows.append((key, str(r.get("eb_epoch", "-")), _pct(r.get("retrain_test_accuracy")),
                         _pct(r.get("baseline_test_accuracy")), _g(r.get("eb_total_flops")),
                         _g(r.get("lt_total_flops")), f"{r['flops_ratio']:.2f}x" if r.get("flops_ratio") else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        table = "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)
        return f"{table}\n\nRun directory: {run_dir} (summary.json, eb_distances.png, eb_p<ratio>/ticket)"


def _fresh_session():
    """Free the previous phase's models; not inside a strategy's scope, whose graph stack clearing would drop."""
    if not tf.distribute.has_strategy():
        keras.backend.clear_session()


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def _g(v):
    return "-" if v is None else f"{v / 1e9:,.0f}"


BACKUP = "backup_"  # checkpoints of the training phases, kept until the run completes


def schedule(train_cfg, num_train, epochs, start_epoch=0):
    """The training config for ``epochs`` epochs with the step schedule resumed at ``start_epoch``: the decay
    points (in any unit, ``lt_keras.duration``) move back by its iterations, and those passed divide the rate."""
    spe = train_cfg.steps_per_epoch(num_train)
    points = train_cfg.resolved(num_train).lr_decay_steps
    start = start_epoch * spe
    decay = tuple(p - start for p in points if p > start)
    lr = train_cfg.learning_rate * train_cfg.lr_decay_factor ** (len(points) - len(decay))
    kind = train_cfg.lr_schedule if decay or not points else "constant"
    return dataclasses.replace(train_cfg, epochs=float(epochs), train_steps=None, lr_decay_steps=decay,
                               lr_schedule=kind, learning_rate=lr)


def _plot_distances(callback, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = callback.detector.ratios
    fig, axes = plt.subplots(1, len(ratios), figsize=(4.2 * len(ratios), 3.8), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        matrix, first = callback.distance_matrix(ratio), callback.epochs[0] if callback.epochs else 1
        image = ax.imshow(matrix, cmap="viridis_r", vmin=0, origin="lower",
                          extent=(first - 0.5, first + len(matrix) - 0.5, first - 0.5, first + len(matrix) - 0.5))
        ax.set_title(f"p = {ratio}" + (f", EB at epoch {callback.emerged[ratio]}" if ratio in callback.emerged else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)


def _detect(output_dir, build, data, train_cfg, config):
    keras.utils.set_random_seed(train_cfg.seed)
    model = build()
    if config.granularity == "channel":
        add_bn_l1(model, config.bn_l1)
    # Checkpoints at every epoch, the detector's masks and EB weights beside them: a killed search resumes at
    # its last epoch with the same FIFOs, and a search that had stopped at its Early-Bird epoch stays stopped.
    backup = os.path.join(output_dir, BACKUP + "search")
    callback = EarlyBirdCallback(config.prune_ratios, config.queue_length, config.epsilon, config.granularity,
                                 config.stop_at_eb, state_dir=os.path.join(backup, "early_bird"),
                                 prune_rule=config.prune_rule, initial_mask=config.initial_mask)
    callback.restore(saved_evaluations(backup))
    phase = schedule(train_cfg, data.num_train, train_cfg.epochs)
    result = fit(model, data, phase, output_dir=os.path.join(output_dir, "search"), callbacks=[callback],
                 backup_dir=backup)
    atomic_write_json(os.path.join(output_dir, "search_history.json"), result.history)
    _plot_distances(callback, os.path.join(output_dir, "eb_distances.png"))
    matrices = {str(r): callback.distance_matrix(r).round(5).tolist() for r in config.prune_ratios}
    atomic_write_json(os.path.join(output_dir, "eb_distances.json"), matrices)
    return model, callback, result


def _ticket_for(searched, callback, ratio, config, precision):
    """The EB ticket at ``ratio``: slimmed model (channel) or masked model (weight) at the EB-epoch weights, fp32.

    ``searched`` is the search's own model (its twin at --precision=int8): it
    is set to the EB-epoch weights, then copied to fp32.
    """
    searched.set_weights(callback.eb_weights[ratio])
    eb_model = precision.to_fp32(searched)
    if eb_model is searched:
        eb_model = keras.models.clone_model(searched)
        eb_model.set_weights(searched.get_weights())
    mask = callback.mask_at(ratio, callback.emerged[ratio])
    if config.granularity == "channel":
        slimmed = slim(eb_model, mask)
        return slimmed, Mask.from_model(slimmed), mask
    mask.apply_to(eb_model)
    return eb_model, mask, mask


def _train_dense_baseline(output_dir, data, train_cfg, config, build):
    """LT one-shot, part 1: the full dense training (with the same BN L1), once for every ratio."""

    _fresh_session()
    keras.utils.set_random_seed(train_cfg.seed)
    model = build()
    if config.granularity == "channel":
        add_bn_l1(model, config.bn_l1)
    phase = schedule(train_cfg, data.num_train, train_cfg.epochs)
    result = fit(model, data, phase, output_dir=os.path.join(output_dir, "baseline_dense"),
                 backup_dir=os.path.join(output_dir, BACKUP + "dense"))
    return {"weights": model.get_weights(), "test_accuracy": result.final_test_accuracy,
            "wall_time_s": result.wall_time_s}


def _baseline_retrain(data, train_cfg, config, ratio, build, dense, folder):
    """LT one-shot, part 2: prune the trained dense net at ``ratio`` (slimmed) and retrain the full schedule."""

    _fresh_session()
    keras.utils.set_random_seed(train_cfg.seed)
    model = build()
    model.set_weights(dense["weights"])
    mask = compute_mask(model, ratio, config.granularity, rule=config.prune_rule)
    if config.granularity == "channel":
        model = slim(model, mask)
    else:
        mask.apply_to(model)
    phase = schedule(train_cfg, data.num_train, train_cfg.epochs)
    retrained = fit(model, data, phase, output_dir=os.path.join(folder, "baseline_retrain"),
                    backup_dir=os.path.join(folder, BACKUP + "baseline_retrain"))
    return {"baseline_dense_test_accuracy": dense["test_accuracy"],
            "baseline_test_accuracy": retrained.final_test_accuracy,
            "baseline_wall_time_s": dense["wall_time_s"] + retrained.wall_time_s}
