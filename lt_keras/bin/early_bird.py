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
accuracy. Outputs: summary.json, eb_distances.png (mask-distance heatmaps),
history.json per phase.
"""
import dataclasses
import glob
import json
import os
import shutil

from absl import app, flags, logging

from lt_keras.bin import common_flags, config_flags
from lt_keras.errors import LtKerasError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    from lt_keras.early_bird import EarlyBirdConfig

    common_flags.define_common_flags(default_model="vgg11_bn", flag_values=flag_values)
    common_flags.define_precision_flags(flag_values)
    config_flags.define(EarlyBirdConfig, flag_values)


BACKUP = "backup_"  # checkpoints of the training phases, kept until the run completes


def eb_options():
    from lt_keras.early_bird import EarlyBirdConfig

    if FLAGS.epochs is None:
        raise LtKerasError("--epochs: Early-Bird works in epochs; give --epochs (not --train_steps).")
    return dataclasses.asdict(config_flags.build(EarlyBirdConfig))


def _schedule(train_cfg, options, num_train, epochs, start_epoch=0):
    """The training config for ``epochs`` epochs with the step schedule resumed at ``start_epoch``."""
    spe = train_cfg.steps_per_epoch(num_train)
    decay = tuple(int(round((e - start_epoch) * spe)) for e in options["lr_decay_epochs"] if e > start_epoch)
    dropped = sum(1 for e in options["lr_decay_epochs"] if e <= start_epoch)
    lr = train_cfg.learning_rate * train_cfg.lr_decay_factor ** dropped
    schedule = "step" if decay else ("constant" if options["lr_decay_epochs"] else train_cfg.lr_schedule)
    return dataclasses.replace(train_cfg, epochs=float(epochs), train_steps=None, lr_decay_steps=decay,
                               lr_schedule=schedule, learning_rate=lr).validate()


def plot_distances(callback, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lt_keras.report import save_figure

    ratios = callback.detector.ratios
    fig, axes = plt.subplots(1, len(ratios), figsize=(4.2 * len(ratios), 3.8), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        matrix = callback.distance_matrix(ratio)
        image = ax.imshow(matrix, cmap="viridis_r", vmin=0, origin="lower",
                          extent=(0.5, len(matrix) + 0.5, 0.5, len(matrix) + 0.5))
        ax.set_title(f"p = {ratio}" + (f", EB at epoch {callback.emerged[ratio]}" if ratio in callback.emerged else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)


def search(run, build, data, train_cfg, options):
    from lt_keras import early_bird
    from lt_keras._keras import keras
    from lt_keras.io_utils import atomic_write_json
    from lt_keras.training import fit, saved_evaluations

    keras.utils.set_random_seed(train_cfg.seed)
    model = build()
    if options["granularity"] == "channel":
        early_bird.add_bn_l1(model, options["bn_l1"])
    # Checkpoints at every epoch, the detector's masks and EB weights beside them: a killed search resumes at
    # its last epoch with the same FIFOs, and a search that had stopped at its Early-Bird epoch stays stopped.
    backup = run.file(BACKUP + "search")
    callback = early_bird.EarlyBirdCallback(options["prune_ratios"], options["queue_length"], options["epsilon"],
                                            options["granularity"], options["stop_at_eb"],
                                            state_dir=os.path.join(backup, "early_bird"))
    callback.restore(saved_evaluations(backup))
    config = _schedule(train_cfg, options, len(data.y_train), train_cfg.epochs)
    result = fit(model, data, config, output_dir=os.path.join(run.path, "search"), callbacks=[callback],
                 backup_dir=backup)
    atomic_write_json(run.file("search_history.json"), result.history)
    plot_distances(callback, run.file("eb_distances.png"))
    matrices = {str(r): callback.distance_matrix(r).round(5).tolist() for r in options["prune_ratios"]}
    atomic_write_json(run.file("eb_distances.json"), matrices)
    return model, callback, result


def ticket_for(searched, callback, ratio, options):
    """The EB ticket at ``ratio``: slimmed model (channel) or masked model (weight) at the EB-epoch weights, fp32.

    ``searched`` is the search's own model (its twin at --precision=int8): it
    is set to the EB-epoch weights, then copied to fp32.
    """
    from lt_keras import early_bird
    from lt_keras._keras import keras
    from lt_keras.mask import Mask
    from lt_keras.precision import from_search_precision

    searched.set_weights(callback.eb_weights[ratio])
    eb_model = from_search_precision(searched)
    if eb_model is searched:
        eb_model = keras.models.clone_model(searched)
        eb_model.set_weights(searched.get_weights())
    mask = callback.history[ratio][callback.emerged[ratio] - 1]
    if options["granularity"] == "channel":
        slimmed = early_bird.slim(eb_model, mask)
        return slimmed, Mask.from_model(slimmed), mask
    mask.apply_to(eb_model)
    return eb_model, mask, mask


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common_flags.user_errors("lt-early-bird"):
        data_cfg, train_cfg, options = common_flags.data_config(), common_flags.train_config(), eb_options()
        precision = common_flags.search_precision()
        parts = {"precision": precision.describe()} if precision.precision != "fp32" else {}
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg, early_bird=options, **parts)
        if summary is None:
            summary = run_all(run, data_cfg, train_cfg, options, precision)
            run.write_summary(summary)
            for folder in glob.glob(os.path.join(run.path, "**", BACKUP + "*"), recursive=True):
                shutil.rmtree(folder, ignore_errors=True)  # the run is complete: no phase resumes any more
    print(json.dumps(summary, indent=2, sort_keys=True))
    print()
    print(table(summary))
    print(f"\nRun directory: {FLAGS.output_dir}")


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


def run_all(run, data_cfg, train_cfg, options, precision):
    import time

    from lt_keras._keras import keras
    from lt_keras.flops import training_flops_per_step
    from lt_keras.io_utils import atomic_write_json
    from lt_keras.models import build_model
    from lt_keras.ticket import write_ticket
    from lt_keras.training import fit

    data = data_cfg.load()
    logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
    num_train, epochs = len(data.y_train), train_cfg.epochs
    spe = train_cfg.steps_per_epoch(num_train)

    def build():
        return build_model(FLAGS.model, data.input_shape, data.num_classes)

    def search_build():  # the search runs at --precision; tickets, retraining and baselines are fp32
        return precision.apply(build())

    start = time.perf_counter()
    model, callback, search_result = search(run, search_build, data, train_cfg, options)
    search_time = time.perf_counter() - start
    searched_epochs = len(search_result.history)
    dense_step = training_flops_per_step(build(), train_cfg.batch_size)
    summary = {"model": FLAGS.model, "dataset": data.spec.name, "data_source": data.source,
               "schedule_epochs": epochs, "search_epochs": searched_epochs, "search_wall_time_s": search_time,
               "dense_flops_per_step": dense_step, "steps_per_epoch": spe, "retrain_from": options["retrain_from"],
               "granularity": options["granularity"], "search_final_test_accuracy": search_result.final_test_accuracy,
               "search_precision": precision.describe(),
               "ratios": {}}
    dense_baseline = None
    for ratio in options["prune_ratios"]:
        entry = {"emerged": ratio in callback.emerged}
        summary["ratios"][str(ratio)] = entry
        if ratio not in callback.emerged:
            logging.warning("no Early-Bird ticket at ratio %s within %d epochs.", ratio, searched_epochs)
            continue
        eb_epoch = callback.emerged[ratio]
        ticket_model, ticket_mask, eb_mask = ticket_for(model, callback, ratio, options)
        folder = run.file(f"eb_p{ratio}")
        write_ticket(os.path.join(folder, "ticket"), ticket_model, ticket_mask, {
            "method": "early_bird", "prune_ratio": ratio, "eb_epoch": eb_epoch, "granularity": options["granularity"],
            "slimmed": options["granularity"] == "channel", "parameters": int(ticket_model.count_params()),
            "precision": "fp32", "found_at_precision": precision.precision, "search_precision": precision.describe()})
        eb_mask.save(os.path.join(folder, "eb_mask.npz"))
        slim_step = training_flops_per_step(ticket_model, train_cfg.batch_size)
        if options["granularity"] == "weight":
            slim_step = dense_step  # unstructured masks run dense kernels
        retrain_epochs = epochs - eb_epoch if options["retrain_from"] == "eb" else epochs
        entry.update(eb_epoch=eb_epoch, eb_fraction_of_schedule=eb_epoch / epochs,
                     ticket_parameters=int(ticket_model.count_params()), ticket_flops_per_step=slim_step,
                     retrain_epochs=retrain_epochs)
        entry["eb_total_flops"] = (eb_epoch * dense_step + retrain_epochs * slim_step) * spe
        entry["lt_total_flops"] = (epochs * dense_step + epochs * slim_step) * spe
        entry["flops_ratio"] = entry["lt_total_flops"] / entry["eb_total_flops"]
        if ratio in options["retrain_ratios"] and retrain_epochs > 0:
            keras.backend.clear_session()
            keras.utils.set_random_seed(train_cfg.seed)
            retrain_model = ticket_model
            if options["retrain_from"] == "scratch":
                retrain_model = keras.models.clone_model(ticket_model)  # same shapes, fresh initializers
                ticket_mask.apply_to(retrain_model)
            config = _schedule(train_cfg, options, num_train, retrain_epochs,
                               start_epoch=eb_epoch if options["retrain_from"] == "eb" else 0)
            start = time.perf_counter()
            result = fit(retrain_model, data, config, output_dir=os.path.join(folder, "retrain"),
                         backup_dir=os.path.join(folder, BACKUP + "retrain"))
            entry.update(retrain_test_accuracy=result.final_test_accuracy, retrain_wall_time_s=time.perf_counter() - start)
            atomic_write_json(os.path.join(folder, "retrain_history.json"), result.history)
        if options["run_baseline"] and ratio in options["retrain_ratios"]:
            if dense_baseline is None:
                dense_baseline = train_dense_baseline(run, data, train_cfg, options, build)
            entry.update(baseline_retrain(data, train_cfg, options, ratio, build, dense_baseline, folder))
    return summary


def train_dense_baseline(run, data, train_cfg, options, build):
    """LT one-shot, part 1: the full dense training (with the same BN L1), once for every ratio."""
    import time

    from lt_keras import early_bird
    from lt_keras._keras import keras
    from lt_keras.training import fit

    keras.backend.clear_session()
    keras.utils.set_random_seed(train_cfg.seed)
    model = build()
    if options["granularity"] == "channel":
        early_bird.add_bn_l1(model, options["bn_l1"])
    start = time.perf_counter()
    config = _schedule(train_cfg, options, len(data.y_train), train_cfg.epochs)
    result = fit(model, data, config, output_dir=run.file("baseline_dense"), backup_dir=run.file(BACKUP + "dense"))
    return {"weights": model.get_weights(), "test_accuracy": result.final_test_accuracy,
            "wall_time_s": time.perf_counter() - start}


def baseline_retrain(data, train_cfg, options, ratio, build, dense, folder):
    """LT one-shot, part 2: prune the trained dense net at ``ratio`` (slimmed) and retrain the full schedule."""
    import time

    from lt_keras import early_bird
    from lt_keras._keras import keras
    from lt_keras.training import fit

    keras.backend.clear_session()
    keras.utils.set_random_seed(train_cfg.seed)
    model = build()
    model.set_weights(dense["weights"])
    mask = early_bird.compute_mask(model, ratio, options["granularity"])
    if options["granularity"] == "channel":
        model = early_bird.slim(model, mask)
    else:
        mask.apply_to(model)
    start = time.perf_counter()
    config = _schedule(train_cfg, options, len(data.y_train), train_cfg.epochs)
    retrained = fit(model, data, config, output_dir=os.path.join(folder, "baseline_retrain"),
                    backup_dir=os.path.join(folder, BACKUP + "baseline_retrain"))
    return {"baseline_dense_test_accuracy": dense["test_accuracy"],
            "baseline_test_accuracy": retrained.final_test_accuracy,
            "baseline_wall_time_s": dense["wall_time_s"] + time.perf_counter() - start}


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
