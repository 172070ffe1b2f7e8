"""What an export costs and how it runs, measured: sizes, latencies, and the path each layer takes.

A pruned model is smaller on disk only once compressed, and faster only where
a kernel skips the zeros (TFMOT issue 173). Read from TensorFlow's sources:
TFLite's FULLY_CONNECTED runs a weight stored sparse in 1x4 blocks (float) or
1x16 (int8) with its sparse kernel, a weight stored sparse in any other layout
goes through a DENSIFY op when the model loads, and every other op computes
dense. So the report says which path each layer takes, read from the converted
model itself, and measures each variant (the dense export beside the ticket's):
bytes raw and gzip'd, and latency at batch 1 and 64 of the SavedModel and of the
TFLite interpreter (LiteRT's ``ai_edge_litert`` when installed, else TensorFlow's
deprecated ``tf.lite.Interpreter``), medians of interleaved rounds.
"""
import gzip
import io
import os
import statistics
import time
import zipfile

import numpy as np

from lt_keras._keras import tf
from lt_keras.layers import kernel_of, weight_layers

BATCHES = (1, 64)
_WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")


def interpreter(tflite_bytes):
    """A TFLite interpreter of ``tflite_bytes`` and the runtime's name (LiteRT, a dependency; TensorFlow's own
    where an install lacks it)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # loaded only when a .tflite is run

        return Interpreter(model_content=tflite_bytes), "ai_edge_litert"
    except ImportError:
        return tf.lite.Interpreter(model_content=tflite_bytes), "tf.lite"


def layer_paths(tflite_bytes, plain) -> dict:
    """Layer name -> how TFLite runs its kernel: ``sparse block kernel`` (a FULLY_CONNECTED weight stored in
    1x4 / 1x16 blocks), ``densified at load`` (stored sparse, expanded by a DENSIFY op), or ``dense``.

    TFLite names tensors after ops, not layers, so the weight ops are paired with the model's kernel layers in
    graph order, each pair checked by the kernel's size."""
    runner, _ = interpreter(tflite_bytes)
    tensors = {t["index"]: t for t in runner.get_tensor_details()}
    ops = runner._get_ops_details()  # noqa: SLF001 (the interpreter's one op listing)
    densified = {out for op in ops if op["op_name"] == "DENSIFY" for out in op["outputs"]}
    weights = [op for op in ops if op["op_name"] in _WEIGHT_OPS]
    paths = {}
    for (name, layer), op in zip(weight_layers(plain), weights):
        weight = tensors[op["inputs"][1]]
        if int(np.prod(weight["shape"])) != kernel_of(layer).shape.num_elements():
            break  # the graph order does not match the layer order: say nothing rather than guess
        sparse = weight.get("sparsity_parameters") or {}
        if sparse and op["op_name"] == "FULLY_CONNECTED":
            block = sparse["dim_metadata"][-1].get("dense_size") if len(sparse.get("block_map", ())) else None
            paths[name] = f"sparse block kernel (1x{block})" if block in (4, 16) else "densified at load"
        elif sparse or op["inputs"][1] in densified:
            paths[name] = "densified at load"
        else:
            paths[name] = "dense"
    return paths


def zipped_size(directory) -> int:
    """Bytes of ``directory`` as a deflate-compressed zip (how sparse weights pay off on disk)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, _, files in os.walk(directory):
            for name in sorted(files):
                path = os.path.join(root, name)
                archive.write(path, os.path.relpath(path, directory))
    return buffer.tell()


def folder_bytes(directory) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, files in os.walk(directory) for name in files)


def median_ms(calls, budget_s=1.5, rounds=5):
    """Median milliseconds of each call, interleaved over ``rounds`` rounds within about ``budget_s``, every other
    round in reverse order (A B, B A, ...), so that running first or after another call favours none."""
    for call in calls:  # warm-up: tracing, allocation
        call()
        call()
    began = time.perf_counter()
    for call in calls:
        call()
    per_round = max(1, int(budget_s / rounds / max(time.perf_counter() - began, 1e-6)))
    times, order = [[] for _ in calls], list(enumerate(calls))
    for r in range(rounds):
        for i, call in (order[::-1] if r % 2 else order):
            start = time.perf_counter()
            for _ in range(per_round):
                call()
            times[i].append((time.perf_counter() - start) / per_round * 1e3)
    return [statistics.median(t) for t in times]


def _saved_model_call(directory, x):
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    x = tf.constant(x)
    return lambda: serve(inputs=x)


def tflite_call(tflite_bytes, batch, input_shape):
    """A call that runs ``tflite_bytes`` once on a batch of ``batch`` random inputs."""
    return _tflite_call(tflite_bytes, np.random.RandomState(0).rand(batch, *input_shape).astype(np.float32))


def _tflite_call(tflite_bytes, x):
    runner, _ = interpreter(tflite_bytes)
    entry = runner.get_input_details()[0]
    runner.resize_tensor_input(entry["index"], x.shape)
    runner.allocate_tensors()
    runner.set_tensor(entry["index"], x.astype(entry["dtype"]) if entry["dtype"] == np.float32 else x)

    def call():
        runner.invoke()

    return call


def measure(variants: dict, input_shape, batches=BATCHES, budget_s=1.5, rounds=5) -> dict:
    """``variants``: name -> (SavedModel folder, TFLite bytes or None); the first is the baseline (dense).

    Returns, per variant: SavedModel bytes (raw, zipped), TFLite bytes (raw, gzip), and per batch size the
    median latency (ms) of the SavedModel and the TFLite interpreter (``median_ms`` with ``budget_s`` and
    ``rounds``), each with its ratio to the baseline."""
    report = {}
    for name, (folder, tflite_bytes) in variants.items():
        entry = {"saved_model_bytes": folder_bytes(folder), "saved_model_zipped_bytes": zipped_size(folder)}
        if tflite_bytes is not None:
            entry.update(tflite_bytes=len(tflite_bytes), tflite_gzip_bytes=len(gzip.compress(tflite_bytes)))
        report[name] = entry
    rng = np.random.RandomState(0)
    runtime = None
    for batch in batches:
        x = rng.rand(batch, *input_shape).astype(np.float32)
        names = list(variants)
        calls = [_saved_model_call(variants[n][0], x) for n in names]
        kinds = ["saved_model"] * len(names)
        with_tflite = [n for n in names if variants[n][1] is not None]
        calls += [_tflite_call(variants[n][1], x) for n in with_tflite]
        kinds += ["tflite"] * len(with_tflite)
        for (name, kind), ms in zip(zip(names + with_tflite, kinds), median_ms(calls, budget_s, rounds)):
            report[name].setdefault(f"{kind}_ms", {})[str(batch)] = ms
        if with_tflite and runtime is None:
            runtime = interpreter(variants[with_tflite[0]][1])[1]
    baseline = report[next(iter(variants))]
    for entry in report.values():
        entry["ratios_to_dense"] = {key: entry[key] / baseline[key] for key in entry
                                    if key.endswith("bytes") and baseline.get(key)}
        for kind in ("saved_model_ms", "tflite_ms"):
            for batch, ms in entry.get(kind, {}).items():
                entry["ratios_to_dense"][f"{kind}@{batch}"] = ms / baseline[kind][batch]
    return {"variants": report, "tflite_runtime": runtime, "batches": list(batches)}
