"""lt-supermask: learn a mask over frozen random weights, or score masks on untrained weights.

    python -m lt_keras.bin.supermask --flagfile=flags/lenet300_mnist_supermask.flags \
        --data_dir=path/to/mnist --output_dir=runs/supermask

Learning (default): the registered model's masked layers become supermask
layers (``--estimator=bernoulli`` as Zhou et al., or ``topk`` as edge-popup)
over weights set by ``--weight_init``; only the scores train. Writes
flags.txt, config.json, history.json, curves.png, summary.json (sampled and
expected-mask accuracies) and ``ticket/`` (frozen weights and the final hard
mask) in the common ticket format.

Untrained masks (``--from_run``): no training. From an lt-train run, the
mask is ``--criterion`` of its initial and final weights at each of
``--densities``; from an lt-imp run, ``--from_round``'s mask. The kept
weights start per ``--mask1`` and the net is evaluated as is.
"""
import json
import os
import shutil
import sys

from absl import app, flags, logging

from lt_keras.bin import common_flags
from lt_keras.errors import LtKerasError

common_flags.define_common_flags()
common_flags.define_precision_flags()
flags.DEFINE_enum("estimator", "bernoulli", ["bernoulli", "topk"], "Supermask estimator.")
flags.DEFINE_float("keep_fraction", 0.5, "topk: fraction of each layer's weights kept.")
flags.DEFINE_float("score_init", 0.0, "bernoulli: initial score (0 -> p = 0.5).")
flags.DEFINE_string("eval_mask", None, "Inference mask during training: sampled or expected (bernoulli), "
                    "topk (topk). Default: sampled / topk.")
flags.DEFINE_integer("eval_samples", 10, "Sampled masks averaged for the final evaluation.", lower_bound=1)
flags.DEFINE_enum("weight_init", "glorot_normal", ["glorot_normal", "kaiming_normal", "signed_constant",
                                                   "signed_kaiming_constant"], "Frozen weights.")
flags.DEFINE_bool("dynamic_weight_rescaling", False, "Scale each layer by numel / ones of its current mask.")
flags.DEFINE_string("from_run", None, "Untrained-mask mode: an lt-train run (init_weights.npz + model.keras) "
                    "or an lt-imp run (with --from_round).")
flags.DEFINE_integer("from_round", None, "lt-imp round whose mask is evaluated untrained.", lower_bound=0)
if "criterion" not in flags.FLAGS:  # lt-imp's flags of the same name and meaning (tests import both)
    flags.DEFINE_string("criterion", "large_final_same_sign", "Untrained-mask mode: mask criterion.")
    flags.DEFINE_string("mask1", "signed_constant", "Untrained-mask mode: mask-1 action for the kept weights.")
flags.DEFINE_list("densities", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"],
                  "Untrained-mask mode: fractions of weights kept, per layer.")
FLAGS = flags.FLAGS


def supermask_options():
    from lt_keras.actions import mask1_action_names
    from lt_keras.criteria import criterion_names
    from lt_keras.layers import EVAL_MASKS

    if FLAGS.eval_mask is not None and FLAGS.eval_mask not in EVAL_MASKS[FLAGS.estimator]:
        raise LtKerasError(f"--eval_mask: {FLAGS.eval_mask!r} does not go with --estimator={FLAGS.estimator}; "
                           f"choose one of {list(EVAL_MASKS[FLAGS.estimator])}.")
    if not 0 < FLAGS.keep_fraction <= 1:
        raise LtKerasError(f"--keep_fraction: must be in (0, 1], got {FLAGS.keep_fraction}.")
    if FLAGS.from_run is not None:
        if FLAGS.criterion not in criterion_names():
            raise LtKerasError(f"--criterion: {FLAGS.criterion!r} is not one of {criterion_names()}.")
        if FLAGS.mask1 not in mask1_action_names():
            raise LtKerasError(f"--mask1: {FLAGS.mask1!r} is not one of {mask1_action_names()}.")
    densities = []
    for value in FLAGS.densities:
        try:
            densities.append(float(value))
        except ValueError:
            raise LtKerasError(f"--densities: {value!r} is not a number.") from None
        if not 0 < densities[-1] <= 1:
            raise LtKerasError(f"--densities: {value} is outside (0, 1].")
    options = {name: FLAGS[name].value for name in ("estimator", "keep_fraction", "score_init", "eval_mask",
                                                     "eval_samples", "weight_init", "dynamic_weight_rescaling")}
    if FLAGS.from_run is not None:
        options.update(from_run=os.path.abspath(FLAGS.from_run), from_round=FLAGS.from_round,
                       criterion=FLAGS.criterion, mask1=FLAGS.mask1, densities=densities)
    return options


def learn(run, model_name, data, train_cfg, options, precision):
    from lt_keras import supermask
    from lt_keras._keras import keras
    from lt_keras.io_utils import atomic_write_json
    from lt_keras.models import build_model
    from lt_keras.precision import from_search_precision
    from lt_keras.report import plot_curves
    from lt_keras.ticket import write_ticket
    from lt_keras.training import fit

    keras.utils.set_random_seed(train_cfg.seed)
    model = build_model(model_name, data.input_shape, data.num_classes)
    supermask.init_weights(model, options["weight_init"], seed=train_cfg.seed)
    model = supermask.to_supermask(model, options["estimator"], options["keep_fraction"], options["score_init"],
                                   options["eval_mask"], options["dynamic_weight_rescaling"], seed=train_cfg.seed)
    model = precision.apply(model)  # the search's precision; the ticket below is fp32
    # Checkpoints at every evaluation: a killed run continues from its last one (Keras BackupAndRestore).
    result = fit(model, data, train_cfg, output_dir=run.path, callbacks=[supermask.MaskDensityLogger()],
                 backup_dir=run.file("backup"))
    atomic_write_json(run.file("history.json"), result.history)
    plot_curves(result.history, run.file("curves.png"))
    test = data.eval_dataset("test")
    evaluations = {}
    if options["estimator"] == "bernoulli":
        evaluations["sampled"] = supermask.evaluate(model, test, "sampled", options["eval_samples"])
        evaluations["expected"] = supermask.evaluate(model, test, "expected")
    else:
        evaluations["topk"] = supermask.evaluate(model, test, "topk")
    model = from_search_precision(model)
    run.save_model(model)
    ticket = supermask.to_ticket(model)
    mask = supermask.hard_mask(model)
    write_ticket(run.file("ticket"), ticket, mask, {
        "method": "supermask", "estimator": options["estimator"], "weight_init": options["weight_init"],
        "dynamic_weight_rescaling": options["dynamic_weight_rescaling"], "source_run": run.path,
        "found_at_precision": precision.precision, "search_precision": precision.describe()})
    shutil.rmtree(run.file("backup"), ignore_errors=True)
    return {
        "mode": "learn",
        "expected_density_at_end": supermask.expected_density(model),
        "ticket_density": mask.density(),
        "evaluations": evaluations,
        "test_accuracy": evaluations.get("sampled", evaluations.get("topk"))["accuracy"],
        **{k: v for k, v in result.to_dict().items() if k != "history"},
    }


def untrained(model_name, data, options, seed):
    from lt_keras import supermask
    from lt_keras._keras import keras
    from lt_keras.layers import masked_layers
    from lt_keras.io_utils import load_weights
    from lt_keras.mask import Mask, mask_key
    from lt_keras.models import build_model

    source = options["from_run"]
    init_path = os.path.join(source, "init_weights.npz")
    if not os.path.exists(init_path):
        raise LtKerasError(f"--from_run {source}: no init_weights.npz (expected an lt-train or lt-imp run).")
    init = load_weights(init_path)
    test = data.eval_dataset("test")

    def fresh():
        model = build_model(model_name, data.input_shape, data.num_classes)
        try:
            model.set_weights(init)
        except ValueError as e:
            raise LtKerasError(f"--from_run {source}: its weights do not fit --model={model_name}: {e}") from None
        return model

    rows = []
    if options["from_round"] is not None:
        mask_path = os.path.join(source, f"round_{options['from_round']}", "mask.npz")
        if not os.path.exists(mask_path):
            raise LtKerasError(f"--from_round: {mask_path} does not exist (is the round complete?).")
        mask = Mask.load(mask_path)
        rows.append({"density": mask.density(), "source": f"round_{options['from_round']}",
                     "accuracy": supermask.untrained_accuracy(fresh(), mask, options["mask1"], test, seed)})
    else:
        final_path = os.path.join(source, "model.keras")
        if not os.path.exists(final_path):
            raise LtKerasError(f"--from_run {source}: no model.keras (the trained weights); is the run finished?")
        trained = keras.models.load_model(final_path)
        final = {mask_key(l): l.kernel.numpy() for l in masked_layers(trained)}
        initial = {mask_key(l): l.kernel.numpy() for l in masked_layers(fresh())}
        for density in options["densities"]:
            mask = supermask.criterion_mask(initial, final, options["criterion"], density, seed)
            rows.append({"density": mask.density(), "keep_per_layer": density, "source": options["criterion"],
                         "accuracy": supermask.untrained_accuracy(fresh(), mask, options["mask1"], test, seed)})
    return {"mode": "untrained", "criterion": options.get("criterion"), "mask1": options["mask1"], "rows": rows,
            "best_accuracy": max(r["accuracy"] for r in rows)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    with common_flags.user_errors("lt-supermask"):
        data_cfg, train_cfg, options = common_flags.data_config(), common_flags.train_config(), supermask_options()
        precision = common_flags.search_precision()
        parts = {"precision": precision.describe()} if precision.precision != "fp32" else {}
        run, summary = common_flags.open_run(FLAGS.output_dir, __name__, model=FLAGS.model, data=data_cfg,
                                             train=train_cfg, supermask=options, **parts)
        if summary is None:
            data = data_cfg.load()
            logging.info("data: %s from %s, %s", data.spec.name, data.source, data.sizes())
            if options.get("from_run"):
                summary = untrained(FLAGS.model, data, options, FLAGS.seed)
            else:
                summary = learn(run, FLAGS.model, data, train_cfg, options, precision)
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
    app.run(main)


if __name__ == "__main__":
    run()
