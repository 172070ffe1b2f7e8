"""Every speed figure of TARGETS.md, one process per figure, interleaved, with medians and targets.

    bash tools/env.sh python tools/bench.py            # full: 5 rounds, ~20 minutes on 2 CPU cores
    bash tools/env.sh python tools/bench.py --quick    # 3 short rounds, under 5 minutes

Figures (each in its own process; the compared configurations alternate
A B A B ... within it, and the ratio of medians is reported). A LeNet-300-100
step takes ~2 ms, so its ratios move by up to ~0.1 between processes on a
shared machine: in full mode each LeNet figure runs in ``--lenet_processes``
processes and the median of their ratios is reported, with every run's value.

- masked / plain Keras step and masked / TFMOT pruning-wrapper step (LeNet-300-100, Conv-4; XLA off and on);
- XLA retraining step / non-XLA step of the masked model (LeNet-300-100, Conv-4);
- 8-bit search step (weights, activations, gradients) / fp32 masked step, TFMOT ``quantize_model`` as reference;
- supermask step / plain Keras step (Bernoulli and top-k);
- one Bernoulli mask draw for LeNet-300-100: the fused sampler / TensorFlow's Philox (reference);
- one top-k supermask selection for LeNet-300-100: near the last k-th value / from scratch (the
  two-pass radix select), and from scratch / ``tf.math.top_k`` (references);
- Early-Bird slimmed model inference / dense inference at p = 0.5 (VGG-11-BN, batch 256);
- ``model.fit`` with ``--steps_per_execution=auto`` / one step per call, masked LeNet-300-100 and Conv-4
  (XLA off and on; ``tools/bench_steps.py``);
- images per second of a search step mirrored over 2 logical CPU devices / one device (reference: no
  speed-up on 2 cores), and of the streaming ImageNet-size input pipeline (reference);
- LeNet-300-100 tickets exported (unstructured 3.6%, 1x4 blocks 10%): gzip'd SavedModel and TFLite bytes and
  latency at batch 1 and 64 (SavedModel, LiteRT) / the dense export (``tools/export_figures.py``).
- the fraction of kernel weights ``mask_model`` masks in MobileNetV2 and a transformer encoder (target >= 0.99);
- A VGG-11 (quarter width) channel ticket compacted (``tools/compact_figures.py``): parameters and latency /
  the uncompacted ticket.

Prints one table and writes JSON (``--json_out``, default bench_results.json).
"""
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_bool("quick", False, "3 short rounds per figure, LeNet only except the XLA figure (< 5 minutes).")
flags.DEFINE_string("json_out", "bench_results.json", "Where the JSON results go.")
flags.DEFINE_integer("lenet_processes", 3, "Processes per LeNet-300-100 figure in full mode (the median is reported).")
flags.DEFINE_string("figure", None, "Internal: run one in-process figure (eb_inference, mask_draw, topk_select).")
FLAGS = flags.FLAGS

EB_TARGET = 0.6
STEPS_TARGET = 0.75  # LeNet masked step, auto steps per call / one step per call


def figures(quick):
    both = ["lenet_300_100"] if quick else ["lenet_300_100", "conv4"]
    steps = ["--quick", "--steps=30"] if quick else []
    conv_steps = ["--quick", "--steps=6"] if quick else []
    out = []
    for model in both:
        extra = steps if model.startswith("lenet") else conv_steps
        out.append((f"masking {model}", ["--models=" + model, "--configs=plain,masked,tfmot", *extra]))
        out.append((f"int8 search {model}", ["--models=" + model, "--configs=masked,int8,tfmot_qat", "--jit=on",
                                             *extra]))
        out.append((f"supermask {model}", ["--models=" + model, "--configs=plain,supermask,topk",
                                           *extra]))
    if quick:  # the XLA figure is the one that differs most between the models: keep Conv-4 in quick mode
        out.append(("xla retrain conv4", ["--models=conv4", "--configs=masked", *conv_steps]))
    return out


def _interleaved_ms(fns, rounds, reps):
    """Median ms per call of each no-argument function, timed A B A B ... after one warm-up call each."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn().numpy()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn().numpy()
            times[name].append(1000 * (time.perf_counter() - start) / reps)
    return {name: statistics.median(v) for name, v in times.items()}


def eb_inference(quick):
    """Slimmed (p = 0.5 channels) vs dense VGG-11-BN inference, interleaved; returns the medians."""
    import numpy as np

    from lt_keras import early_bird
    from lt_keras._keras import keras, tf
    from lt_keras.models import build_model

    keras.utils.set_random_seed(0)
    dense = build_model("vgg11_bn", (32, 32, 3), 10)
    rng = np.random.RandomState(0)
    for bn in early_bird.prunable_bns(dense):
        bn.gamma.assign(rng.rand(*bn.gamma.shape))
    slim = early_bird.slim(dense, early_bird.channel_mask(dense, 0.5))
    x = tf.constant(rng.randn(256, 32, 32, 3).astype(np.float32))
    fns = {name: tf.function(lambda m=m: m(x, training=False))  # serving on CPU: no XLA
           for name, m in (("dense", dense), ("slimmed", slim))}
    medians = _interleaved_ms(fns, *((3, 2) if quick else (5, 5)))
    return {"figure": "eb inference vgg11_bn p=0.5", "ms_per_batch": medians,
            "ratios": {"slimmed/dense": {"value": medians["slimmed"] / medians["dense"], "target": EB_TARGET}}}


def mask_draw(quick):
    """One LeNet-300-100 Bernoulli mask draw: ``lt_keras.bernoulli`` vs TensorFlow's stateless Philox."""
    from lt_keras._keras import tf
    from lt_keras.bernoulli import sampled_mask

    shapes = [(784, 300), (300, 100), (100, 10)]
    scores = [tf.Variable(tf.random.normal(s, seed=i)) for i, s in enumerate(shapes)]

    def philox(s):
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        return tf.cast(tf.random.stateless_uniform(tf.shape(s), seed=seed, alg="philox") < tf.sigmoid(s), s.dtype)

    draws = 10  # per call, each mask summed so that XLA cannot skip any of it

    def compiled(sample, jit):
        return tf.function(lambda: tf.add_n([tf.reduce_sum(sample(s)) for _ in range(draws) for s in scores]),
                           jit_compile=jit)

    medians, ratios = {}, {}
    for jit in (False, True):
        def fused(s):
            return sampled_mask(s, tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32))

        fns = {"philox": compiled(philox, jit), "fused": compiled(fused, jit)}
        ms = _interleaved_ms(fns, *((3, 5) if quick else (7, 10)))
        xla = "on" if jit else "off"
        medians.update({f"{name} xla={xla}": v / draws for name, v in ms.items()})
        ratios[xla] = {"fused/philox": ms["fused"] / ms["philox"]}
    return {"figure": "bernoulli mask draw lenet_300_100", "ms_per_call": medians, "ratios": ratios}


def topk_select(quick):
    """One LeNet-300-100 top-k (50%) selection: ``lt_keras.topk`` (with the slope, as a step uses it) / top_k.

    The scores move a little before every call, as a training step moves them.
    """
    import numpy as np

    from lt_keras._keras import tf
    from lt_keras.topk import top_k_masks

    shapes = [(784, 300), (300, 100), (100, 10)]
    scores = [tf.Variable(tf.random.normal(s, seed=i)) for i, s in enumerate(shapes)]
    moves = [tf.constant(np.where(np.random.RandomState(i).rand(*s) < 0.5, -1e-3, 1e-3), tf.float32)
             for i, s in enumerate(shapes)]
    sign = tf.Variable(1.0)

    def sorting(s, k):
        indices = tf.math.top_k(tf.reshape(tf.abs(s), [-1]), k, sorted=False).indices
        return tf.scatter_nd(indices[:, None], tf.ones([k]), [tf.size(s)])

    selects = {"radix": lambda s, k: top_k_masks(s, k)[0], "top_k": sorting}

    def compiled(select, jit):  # each mask summed so that XLA cannot skip any of it
        def call():
            sign.assign(-sign)
            for s, move in zip(scores, moves):  # every score moves by +-1e-3 (back and forth), as under Adam
                s.assign_add(sign * move)
            return tf.add_n([tf.reduce_sum(select(s, int(s.shape[0]) * int(s.shape[1]) // 2)) for s in scores])
        return tf.function(call, jit_compile=jit)

    medians, ratios = {}, {}
    rounds = 3 if quick else 7
    for jit in (False, True):
        # the ~20-40 ms sort slows the calls timed right after it: it is timed on its own
        ms = _interleaved_ms({"radix": compiled(selects["radix"], jit)}, rounds, 5)
        ms.update(_interleaved_ms({"top_k": compiled(selects["top_k"], jit)}, rounds, 2))
        xla = "on" if jit else "off"
        medians.update({f"{name} xla={xla}": v for name, v in ms.items()})
        ratios[xla] = {"radix/top_k": ms["radix"] / ms["top_k"]}
    return {"figure": "topk select lenet_300_100", "ms_per_call": medians, "ratios": ratios}


MASK_MODEL_TARGET_S = 2.0  # issue: mask_model(resnet50) <= 2 s on this machine


def mask_model_time(quick):
    """Seconds to convert a plain ResNet-50 (224x224, 1,000 classes) with ``mask_model``: what every search
    of an ImageNet network starts with. A fresh plain model per run (a conversion reads its source only)."""
    from lt_keras import mask_model
    from lt_keras.models import build_model

    seconds = []
    for _ in range(1 if quick else 3):
        plain = build_model("resnet50", (224, 224, 3), 1000, masked=False)
        began = time.perf_counter()
        mask_model(plain)
        seconds.append(time.perf_counter() - began)
    return {"figure": "mask_model resnet50", "seconds": seconds}


def mirrored_step(quick):
    """Images per second of a masked LeNet-300-100 search step (batch 60) on one device and mirrored over 2
    logical CPU devices, alternating. No speed-up is expected on 2 cores (the replicas share them); the figure
    is for machines with several accelerators, where each replica has its own."""
    from lt_keras.distribute import Devices

    mirrored = Devices("mirrored", cpu_devices=2).make()  # first: logical devices exist only if split first
    import numpy as np
    from lt_keras._keras import keras, tf
    from lt_keras.models import build_model

    batch, steps = 60, 20 if quick else 100
    x = np.random.RandomState(0).rand(batch * steps, 28, 28, 1).astype(np.float32)
    y = np.arange(batch * steps) % 10
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    runs = {}
    for name, strategy in (("one device", tf.distribute.get_strategy()), ("mirrored 2", mirrored)):
        with strategy.scope():
            model = build_model("lenet_300_100", (28, 28, 1), 10)
            model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          jit_compile=False)
        model.fit(data, epochs=1, verbose=0)  # trace
        runs[name] = model
    seconds = {name: [] for name in runs}
    for _ in range(3 if quick else 5):
        for name, model in runs.items():
            began = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - began)
    rate = {name: batch * steps / statistics.median(s) for name, s in seconds.items()}
    return {"figure": "search step lenet_300_100", "images_per_s": rate,
            "ratio": rate["mirrored 2"] / rate["one device"]}


def streaming_input(quick):
    """Images per second of the streaming training pipeline (TFDS files -> decode -> random-resized crop 224 +
    flip -> batch 64), on a TFDS dataset of JPEG images of ImageNet's typical size written to a temp folder."""
    import numpy as np
    import tensorflow_datasets as tfds
    from lt_keras import streaming
    from lt_keras.data import DATASETS

    count = 256 if quick else 1024

    class LtBenchImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"),
                                         features=tfds.features.FeaturesDict({
                                             "image": tfds.features.Image(shape=(None, None, 3),
                                                                          encoding_format="jpeg"),
                                             "label": tfds.features.ClassLabel(num_classes=10)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(count), "validation": self._generate_examples(32)}

        def _generate_examples(self, n):
            rng = np.random.RandomState(n)
            for i in range(n):
                yield i, {"image": rng.randint(0, 255, (375, 500, 3), np.uint8), "label": i % 10}

    with tempfile.TemporaryDirectory() as folder:
        LtBenchImages(data_dir=folder).download_and_prepare()
        spec = dataclasses.replace(DATASETS["imagenette"], tfds_name="lt_bench_images", default_validation_size=32)
        loaded = streaming.load(spec, folder)
        pipeline = loaded.train_dataset(64, seed=0)
        batches = (count - 32) // 64
        for _ in pipeline.take(2):  # warm up
            pass
        seconds = []
        for _ in range(2 if quick else 3):
            began = time.perf_counter()
            for _ in pipeline.take(batches):
                pass
            seconds.append(time.perf_counter() - began)
    return {"figure": "streaming input 224x224", "images_per_s": 64 * batches / statistics.median(seconds)}


def export_lenet(quick):
    """The deployment rows of LeNet-300-100 tickets (``tools/export_figures.py``, synthetic tickets: unstructured
    at 3.6% and 1x4 blocks at 10%): sizes and latencies of each export as ratios to the dense export."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_figures import figures, synthetic_tickets
    from lt_keras.data import DataConfig

    with tempfile.TemporaryDirectory(prefix="lt_bench_export_") as folder:
        rows = figures(synthetic_tickets(folder), DataConfig().load(), folder)
    return {"figure": "export lenet_300_100", "rows": [{k: v for k, v in r.items() if not isinstance(v, dict)}
                                                       for r in rows]}


def compact_vgg(quick):
    """A compacted VGG-11 (quarter width) channel ticket beside the uncompacted one (``tools/compact_figures.py``,
    the seeded Early-Bird channel mask at 50%): parameters and latencies as ratios to the ticket."""
    del quick  # about half a minute either way
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from compact_figures import eb_ticket, figures

    with tempfile.TemporaryDirectory(prefix="lt_bench_compact_") as folder:
        row = figures([("vgg11_bn_quarter eb 0.5", eb_ticket("vgg11_bn_quarter"))], folder)[0]
    return {"figure": "compact vgg11_bn_quarter eb 0.5", "row": row}


def mask_coverage(quick):
    """The fraction of kernel weights ``mask_model`` masks in keras.applications' MobileNetV2 (``weights=None``,
    32x32) and in a small transformer encoder of Keras layers (``lt_keras.models.text_encoder``)."""
    del quick  # seconds either way
    from lt_keras import keras, mask_model
    from lt_keras.convert import coverage
    from lt_keras.models import text_encoder

    mobilenet = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    return {"figure": "mask_model coverage", "masked": {"mobilenet_v2": coverage(mask_model(mobilenet)),
                                                        "text_encoder": coverage(mask_model(text_encoder()))}}


IN_PROCESS = {"eb_inference": eb_inference, "mask_draw": mask_draw, "topk_select": topk_select,
              "mask_model": mask_model_time, "mirrored_step": mirrored_step, "streaming_input": streaming_input,
              "export_lenet": export_lenet, "compact_vgg": compact_vgg,
              "mask_coverage": mask_coverage}


def run_in_process_figure(name):
    print(f"[{name}] tools/bench.py --figure={name}", flush=True)
    result = subprocess.run([sys.executable, os.path.abspath(__file__), f"--figure={name}",
                             f"--quick={FLAGS.quick}"], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if result.returncode != 0:
        raise SystemExit(f"bench: figure {name!r} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_layer_figure(name, args, tool="bench_layers.py"):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    command = [sys.executable, os.path.join(REPO, "tools", tool), *args, f"--json_out={path}"]
    print(f"[{name}] {' '.join(command[1:-1])}", flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: figure {name!r} failed:\n{result.stderr[-2000:]}")
    with open(path) as f:
        report = json.load(f)
    os.unlink(path)
    return report


def collect_runs(name, reports):
    """One row per ratio: the median over the processes' values, with each of them under ``runs``."""
    runs = [collect(name, report) for report in reports]
    rows = []
    for same in zip(*runs):
        values = [row["value"] for row in same]
        ms = {k: statistics.median(row["ms_per_step"][k] for row in same) for k in same[0]["ms_per_step"]}
        rows.append(dict(same[0], value=statistics.median(values), ms_per_step=ms,
                         **({"runs": values} if len(values) > 1 else {})))
    return rows


def collect(name, report):
    """Flatten one bench_layers report into rows of (figure, configuration, ratio, value, target)."""
    rows, targets = [], report["targets"]
    for row in report["rows"]:
        label = f"{name} xla={'on' if row['jit_compile'] else 'off'}"
        for key, target in targets.items():
            if key in row:
                rows.append({"figure": label, "ratio": key, "value": row[key], "target": target,
                             "ms_per_step": row["ms_per_step"]})
    for model, value in report.get("xla_retrain", {}).items():
        rows.append({"figure": f"xla retrain {model}", "ratio": "masked xla/no-xla", "value": value, "target": 0.85,
                     "ms_per_step": {}})
    return rows


def main(argv):
    del argv
    if FLAGS.figure:
        if FLAGS.figure not in IN_PROCESS:
            raise app.UsageError(f"--figure: unknown {FLAGS.figure!r}; choose from {list(IN_PROCESS)}.")
        print(json.dumps(IN_PROCESS[FLAGS.figure](FLAGS.quick)))
        return
    start = time.perf_counter()
    rows = []
    if FLAGS.lenet_processes < 1:
        raise app.UsageError(f"--lenet_processes: must be >= 1, got {FLAGS.lenet_processes}.")
    for name, args in figures(FLAGS.quick):
        processes = FLAGS.lenet_processes if "lenet" in name and not FLAGS.quick else 1
        rows += collect_runs(name, [run_layer_figure(name, args) for _ in range(processes)])
    models = "lenet_300_100" if FLAGS.quick else "lenet_300_100,conv4"
    for row in run_layer_figure("steps per call", [f"--models={models}", f"--quick={FLAGS.quick}"], "bench_steps.py"):
        if row["count"] == "auto":
            target = STEPS_TARGET if row["model"].startswith("lenet") else None
            rows.append({"figure": f"steps per call {row['model']} xla={row['jit']}",
                         "ratio": f"auto({row['steps_per_execution']})/1", "value": row["ratio"], "target": target,
                         "ms_per_step": {"auto": row["ms_per_step"]}})
    for name in ("mask_draw", "topk_select"):  # reference figures: what the supermask steps are made of
        figure = run_in_process_figure(name)
        for xla, ratios in figure["ratios"].items():
            ms = {k: v for k, v in figure["ms_per_call"].items() if k.endswith(f"xla={xla}")}
            rows += [{"figure": f"{figure['figure']} xla={xla}", "ratio": ratio, "value": value, "target": None,
                      "ms_per_step": ms} for ratio, value in ratios.items()]
    eb = run_in_process_figure("eb_inference")
    rows.append({"figure": eb["figure"], "ratio": "slimmed/dense", "value": eb["ratios"]["slimmed/dense"]["value"],
                 "target": EB_TARGET, "ms_per_step": eb["ms_per_batch"]})
    converted = run_in_process_figure("mask_model")
    rows.append({"figure": converted["figure"], "ratio": "seconds", "value": statistics.median(converted["seconds"]),
                 "target": MASK_MODEL_TARGET_S, "runs": converted["seconds"]})
    step = run_in_process_figure("mirrored_step")
    rows.append({"figure": step["figure"], "ratio": "mirrored 2 / one (img/s)", "value": step["ratio"],
                 "target": None, "images_per_s": step["images_per_s"]})
    exported = run_in_process_figure("export_lenet")
    targets = {"saved_model_zipped_bytes": 0.1, "tflite_gzip_bytes": 0.1, "saved_model_ms@1": 1.0,
               "saved_model_ms@64": 1.0, "tflite_ms@1": 1.0, "tflite_ms@64": 1.0}
    for row in exported["rows"]:
        block = row["ticket"].startswith("block")
        for key, target in targets.items():
            if block and key.endswith("bytes"):
                target = None  # 10% of the weights: no size target
            if block and key == "tflite_ms@1":
                target = 0.5  # TFLite's sparse 1x4-block kernel
            rows.append({"figure": f"{exported['figure']} {row['ticket']}", "ratio": f"{key} / dense",
                         "value": row[key], "target": target})
    covered = run_in_process_figure("mask_coverage")
    for model, fraction in covered["masked"].items():
        rows.append({"figure": f"{covered['figure']} {model}", "ratio": "masked/kernel weights", "value": fraction,
                     "target": 0.99, "at_least": True})
    compacted = run_in_process_figure("compact_vgg")
    row = compacted["row"]
    rows.append({"figure": compacted["figure"], "ratio": "parameters compacted/ticket",
                 "value": row["compacted"] / row["parameters"], "target": None})
    for key in ("saved_model_ms@1", "saved_model_ms@64", "tflite_ms@1", "tflite_ms@64"):
        rows.append({"figure": compacted["figure"], "ratio": f"{key} compacted/ticket", "value": row[key],
                     "target": None})
    stream = run_in_process_figure("streaming_input")
    rows.append({"figure": stream["figure"], "ratio": "images/s", "value": stream["images_per_s"], "target": None})
    for row in rows:
        at_least = row.get("at_least", False)  # a fraction covered: higher is better
        row["met"] = None if row["target"] is None else (row["value"] >= row["target"] if at_least
                                                         else row["value"] <= row["target"])
    print(f"\n{'figure':<36} {'ratio':<20} {'median ratio':>12} {'target':>8}  verdict")
    for row in rows:
        target = "-" if row["target"] is None else f"{'>=' if row.get('at_least') else '<='} {row['target']}"
        verdict = "reference" if row["met"] is None else ("ok" if row["met"] else "MISSED")
        runs = f"  (runs: {', '.join(f'{v:.3f}' for v in row['runs'])})" if "runs" in row else ""
        print(f"{row['figure']:<36} {row['ratio']:<20} {row['value']:>12.3f} {target:>8}  {verdict}{runs}")
    from lt_keras.versions import library_versions

    report = {"quick": FLAGS.quick, "wall_time_s": time.perf_counter() - start, "rows": rows,
              "versions": library_versions()}
    with open(FLAGS.json_out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n{len(rows)} figures in {report['wall_time_s']:.0f} s; JSON: {FLAGS.json_out}")


if __name__ == "__main__":
    app.run(main)
