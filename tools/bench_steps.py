"""Training steps per call: ``model.fit`` with ``steps_per_execution`` N vs 1, the masked models lt_keras trains.

    bash tools/env.sh python tools/bench_steps.py                  # LeNet and Conv-4, XLA off and on
    bash tools/env.sh python tools/bench_steps.py --quick          # fewer, shorter rounds
    bash tools/env.sh python tools/bench_steps.py --counts=1,10,25,50,100,200   # choose the auto cap

Each configuration (model x XLA x count) is a masked model (50% random
masks) compiled alike with Adam and trained by ``model.fit`` on an
in-memory tf.data pipeline of batch 60, as ``lt_keras.training.fit`` feeds
it; the configurations are timed interleaved (A B C A B C ...) and the
medians give ms/step and the ratio to one step per call. A small model on a
CPU pays TensorFlow's per-call dispatch at every step; compiling N steps into
one call pays it once per N (``lt_keras.training.AUTO_STEPS_CAP``).
With ``--torch_python`` (a separate virtualenv with torch, e.g.
``python -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy``), a
hand-written PyTorch eager loop doing the same LeNet work
(``tools/bench_torch.py``) runs one round per process between ours, as the
reference row.
"""
import json
import statistics
import sys
import time

import numpy as np
from absl import app, flags

from lt_keras import Mask
from lt_keras._keras import keras, tf
from lt_keras.models import build_model

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet_300_100", "conv4"], "Models to measure.")
flags.DEFINE_list("counts", ["1", "auto"], "Steps per call to compare (auto: lt_keras's default for the model).")
flags.DEFINE_list("jit", ["off", "on"], "XLA settings: off, on.")
flags.DEFINE_integer("steps", None, "Timed steps per round (default 400 for LeNet, 40 for conv nets).")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds; medians are reported.")
flags.DEFINE_bool("quick", False, "3 rounds of fewer steps.")
flags.DEFINE_string("json_out", None, "Also write the results as JSON here.")
flags.DEFINE_string("torch_python", None, "A Python with torch (its own virtualenv): adds the reference row of a "
                    "hand-written PyTorch eager loop (tools/bench_torch.py) for LeNet, one round per process, "
                    "interleaved. torch is never a dependency of lt_keras.")

SHAPES = {"lenet_300_100": (28, 28, 1)}
TARGET = 0.75  # LeNet masked step with auto <= 0.75x the one-step-per-call step


def _dataset(shape, n=3000):
    rng = np.random.default_rng(0)
    x, y = rng.random((n, *shape), np.float32), rng.integers(0, 10, n)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(60, drop_remainder=True).prefetch(2)


def _masked_model(name, shape, jit, count):
    keras.utils.set_random_seed(0)
    model = build_model(name, shape, 10)
    rng = np.random.RandomState(0)
    Mask({k: rng.rand(*v.shape) < 0.5 for k, v in Mask.from_model(model).items()}).apply_to(model)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=jit,
                  steps_per_execution=count)
    return model


def resolve(count, steps):
    from lt_keras.training import resolve_steps_per_execution

    return resolve_steps_per_execution(count, steps)


def bench(name, jit, steps, rounds):
    shape = SHAPES.get(name, (32, 32, 3))
    data = _dataset(shape)
    counts = {label: resolve(label, steps) for label in FLAGS.counts}
    models = {label: _masked_model(name, shape, jit == "on", n) for label, n in counts.items()}
    for model in models.values():  # warm-up: tracing and compilation are not timed
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    times = {label: [] for label in models}
    torch_rounds = [] if (FLAGS.torch_python and name == "lenet_300_100") else None
    for _ in range(rounds):
        for label, model in models.items():
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            times[label].append(1000 * (time.perf_counter() - start) / steps)
        if torch_rounds is not None:
            torch_rounds.append(_torch_round(steps))
    ms = {label: statistics.median(v) for label, v in times.items()}
    base = FLAGS.counts[0]
    rows = [{"model": name, "jit": jit, "count": label, "steps_per_execution": counts[label],
             "ms_per_step": ms[label], "ratio": ms[label] / ms[base], "vs": base} for label in models]
    if torch_rounds:
        torch_ms = statistics.median(torch_rounds)
        rows.append({"model": name, "jit": jit, "count": "pytorch", "steps_per_execution": 1, "ms_per_step": torch_ms,
                     "ratio": ms["auto"] / torch_ms if "auto" in ms else ms[base] / torch_ms,
                     "vs": "ours (auto) / PyTorch eager"})
    return rows


def _torch_round(steps):
    """One round of tools/bench_torch.py in ``--torch_python``'s own process: ms per step."""
    import os
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch.py")
    out = subprocess.run([FLAGS.torch_python, script, f"--steps={steps}", "--rounds=1"], capture_output=True,
                         text=True, timeout=600)
    if out.returncode:
        sys.exit(f"bench_steps: --torch_python={FLAGS.torch_python} could not run {script}: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["ms_per_step"][0]


def main(argv):
    del argv
    rounds = 3 if FLAGS.quick else FLAGS.rounds
    rows = []
    for name in FLAGS.models:
        steps = FLAGS.steps or ((100 if FLAGS.quick else 400) if name.startswith("lenet") else
                                (10 if FLAGS.quick else 40))
        for jit in FLAGS.jit:
            print(f"[{name} xla={jit}] {steps} steps x {rounds} rounds ...", file=sys.stderr, flush=True)
            rows.extend(bench(name, jit, steps, rounds))
    print(f"{'model':16s} {'xla':4s} {'count':>6s} {'N':>4s} {'ms/step':>8s} {'ratio':>7s}  target")
    for r in rows:
        target = ""
        if r["model"].startswith("lenet") and r["count"] == "auto" and r["vs"] == "1":
            target = f"<= {TARGET}  {'ok' if r['ratio'] <= TARGET else 'MISSED'}"
        if r["count"] == "pytorch":  # the ratio is ours (auto) / PyTorch's eager loop
            target = f"ours/PyTorch <= 1.0  {'ok' if r['ratio'] <= 1.0 else 'MISSED'}"
        print(f"{r['model']:16s} {r['jit']:4s} {r['count']:>6s} {r['steps_per_execution']:4d} {r['ms_per_step']:8.2f} "
              f"{r['ratio']:7.3f}  {target}")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)
