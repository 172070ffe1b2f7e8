"""Training-step cost of masked and supermask layers vs plain Keras vs TFMOT's pruning wrapper.

    bash tools/env.sh python tools/bench_layers.py            # LeNet-300-100 and Conv-4
    bash tools/env.sh python tools/bench_layers.py --quick    # fewer, shorter rounds

For each model and for XLA off/on, three configurations of the same
architecture train side by side in one process, interleaved (A B C A B C ...):
plain Keras layers, lt_keras masked layers (fixed random masks at 50%
density), the plain model wrapped by TFMOT ``prune_low_magnitude`` (50%
constant sparsity), and supermask layers over frozen weights (Bernoulli
sampling; top-k at 50%), the 8-bit search twin (weights, activations and
gradients; ``int8/masked`` <= 1.6) and TFMOT's ``quantize_model`` as the
reference, all with Adam. Each round times ``--steps`` training steps of batch 60 on
synthetic inputs (step cost does not depend on pixel values); the medians over
``--rounds`` rounds give the ratios, printed beside their targets from
TARGETS.md (masked/plain <= 1.05, masked/TFMOT <= 0.85, supermask/plain <= 1.3).
"""
import json
import statistics
import sys
import time

import numpy as np
from absl import app, flags

from lt_keras import Mask, supermask
from lt_keras._keras import keras, tf
from lt_keras.models import build_model
from lt_keras.precision import SearchPrecision

INT8 = SearchPrecision("int8")

CONFIGS = ("plain", "masked", "tfmot", "supermask", "topk", "int8", "tfmot_qat")
XLA_TARGET = 0.85
flags.DEFINE_list("models", ["lenet_300_100", "conv4"], "Models to measure.")
flags.DEFINE_integer("steps", None, "Timed steps per round (default 200 for LeNet, 40 for conv nets).")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds; medians are reported.")
flags.DEFINE_bool("quick", False, "3 rounds of fewer steps.")
flags.DEFINE_string("json_out", None, "Also write the results as JSON here.")
flags.DEFINE_list("configs", list(CONFIGS), f"Configurations to time, from {list(CONFIGS)}.")
flags.DEFINE_list("jit", ["off", "on"], "XLA settings to measure: off, on.")
FLAGS = flags.FLAGS

BATCH = 60
INPUT_SHAPES = {"lenet_300_100": (28, 28, 1)}
TARGETS = {"masked/plain": 1.05, "masked/tfmot": 0.85, "supermask/plain": 1.3, "topk/plain": 1.3,
           "int8/masked": 1.6, "tfmot_qat/plain": None, "tfmot_qat/masked": None}



class _StepTimer(keras.callbacks.Callback):
    """Wall time from the end of the first batch to the end of training (setup excluded)."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def _compile(model, jit):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def _masked_half(name, shape):
    keras.utils.set_random_seed(0)
    masked = build_model(name, shape, 10, masked=True)
    rng = np.random.RandomState(0)
    Mask({k: rng.rand(*v.shape) < 0.5 for k, v in Mask.from_model(masked).items()}).apply_to(masked)
    return masked


def make_configs(name, jit):
    """The requested configurations of ``name``, each built from seed 0 and compiled alike."""
    import tensorflow_model_optimization as tfmot

    shape = INPUT_SHAPES.get(name, (32, 32, 3))
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=100)
    builders = {
        "plain": lambda: build_model(name, shape, 10, masked=False),
        "masked": lambda: _masked_half(name, shape),
        "tfmot": lambda: tfmot.sparsity.keras.prune_low_magnitude(build_model(name, shape, 10, masked=False),
                                                                  pruning_schedule=schedule),
        "supermask": lambda: supermask.to_supermask(build_model(name, shape, 10), "bernoulli"),
        "topk": lambda: supermask.to_supermask(build_model(name, shape, 10), "topk", keep_fraction=0.5),
        "int8": lambda: INT8.to_search(_masked_half(name, shape)),  # W+A+G 8-bit twin
        "tfmot_qat": lambda: tfmot.quantization.keras.quantize_model(build_model(name, shape, 10, masked=False)),
    }
    models = {}
    for label in FLAGS.configs:
        if label not in builders:
            raise app.UsageError(f"--configs: unknown {label!r}; choose from {list(CONFIGS)}.")
        keras.utils.set_random_seed(0)
        models[label] = _compile(builders[label](), jit)
    callbacks = {"tfmot": [tfmot.sparsity.keras.UpdatePruningStep()]}
    return models, callbacks, shape


def time_steps(model, dataset, steps, extra_callbacks=()):
    timer = _StepTimer()
    model.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer, *extra_callbacks])
    return 1000.0 * (timer.end - timer.start) / steps


def bench(name, jit, steps, rounds):
    models, callbacks, shape = make_configs(name, jit)
    rng = np.random.RandomState(1)
    x = rng.randn(BATCH * 8, *shape).astype(np.float32)
    y = rng.randint(0, 10, BATCH * 8).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(BATCH).prefetch(tf.data.AUTOTUNE)
    results = {}
    for label, model in models.items():  # warm-up: tracing and XLA compilation
        try:
            time_steps(model, dataset, 3, callbacks.get(label, ()))
            results[label] = []
        except Exception as e:  # e.g. a configuration XLA cannot compile
            print(f"  {name} {label} jit={jit}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    for _ in range(rounds):
        for label in results:
            results[label].append(time_steps(models[label], dataset, steps, callbacks.get(label, ())))
    return {label: statistics.median(times) for label, times in results.items()}, results


def main(argv):
    del argv
    rounds = 3 if FLAGS.quick else FLAGS.rounds
    report = {"batch_size": BATCH, "rounds": rounds, "tensorflow": tf.__version__, "targets": TARGETS, "rows": []}
    for name in FLAGS.models:
        steps = FLAGS.steps or ((60 if name.startswith("lenet") else 10) if FLAGS.quick else
                                (200 if name.startswith("lenet") else 40))
        for jit in [j == "on" for j in FLAGS.jit]:
            medians, raw = bench(name, jit, steps, rounds)
            row = {"model": name, "jit_compile": jit, "steps_per_round": steps, "ms_per_step": medians,
                   "raw_ms_per_step": raw}
            for key in TARGETS:  # None: a reference ratio, printed without a target
                a, b = key.split("/")
                if a in medians and b in medians:
                    row[key] = medians[a] / medians[b]
            report["rows"].append(row)
            print(_format_row(row), flush=True)
        by_jit = {r["jit_compile"]: r["ms_per_step"].get("masked") for r in report["rows"] if r["model"] == name}
        if by_jit.get(True) and by_jit.get(False):
            # Retraining a ticket = training the masked model; XLA must pay for itself (<= 0.85).
            ratio = by_jit[True] / by_jit[False]
            report.setdefault("xla_retrain", {})[name] = ratio
            print(f"{name:<14} masked XLA / masked no-XLA {ratio:.3f} (target <= {XLA_TARGET}: "
                  f"{'ok' if ratio <= XLA_TARGET else 'MISSED'})", flush=True)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps({"rows": [{k: v for k, v in r.items() if k != "raw_ms_per_step"} for r in report["rows"]],
                      "xla_retrain": report.get("xla_retrain", {})}, indent=2))


def _format_row(row):
    ms = row["ms_per_step"]
    parts = [f"{row['model']:<14} xla={'on ' if row['jit_compile'] else 'off'}"]
    parts += [f"{k} {ms[k]:7.3f} ms" for k in CONFIGS if k in ms]
    for key, target in TARGETS.items():
        if key in row and target is None:
            parts.append(f"{key} {row[key]:.3f} (reference)")
        elif key in row:
            verdict = "ok" if row[key] <= target else "MISSED"
            parts.append(f"{key} {row[key]:.3f} (target <= {target}: {verdict})")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(app.run(main))
