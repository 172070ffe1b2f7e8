"""Export a ticket for serving: a plain SavedModel (and TFLite) that needs nothing of ours.

``strip_masks`` bakes ``kernel * mask`` into plain Keras layers (a slimmed
Early-Bird model stays slimmed: it is already plain and small); the
SavedModel gets a ``serving_default`` signature over the model's input. The
report measures what users check before shipping: per-layer sparsity, the
largest output difference between the masked model and the export, and the
zipped size of a dense export against the sparse one.
"""
import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.compact import compact, compaction_summary
from lt_keras.convert import strip_masks
from lt_keras.errors import ConfigError, LtKerasError, RunDirError
from lt_keras.export_report import BATCHES, layer_paths, measure, median_ms, tflite_call, zipped_size
from lt_keras.export_report import interpreter as tflite_interpreter
from lt_keras.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from lt_keras.layers import is_masked, kernel_of, masked_layers, weight_layers
from lt_keras.runs import release_lock, sign_lock, take_lock
from lt_keras.sparse_serving import sparse_serving
from lt_keras.ticket import load_ticket

TFLITE_QUANTIZATION = ("none", "dynamic", "int8")


def plain_model(model):
    """The servable model: masks baked in when the model has masked layers."""
    return strip_masks(model) if masked_layers(model) else model


def _serving_fn(model):
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), model.inputs[0].dtype, name="inputs")

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {"logits": model(inputs, training=False)}

    return serve


def save_saved_model(model, directory):
    """Write ``model`` (plain layers) as a SavedModel with a ``serving_default`` signature."""
    serve = _serving_fn(model)
    tf.saved_model.save(model, directory, signatures={"serving_default": serve})
    return directory


def layer_sparsity(model) -> dict:
    """Fraction of zeros in every kernel of a plain model (nested blocks included)."""
    out = {}
    for name, layer in weight_layers(model):
        out[name] = float(np.mean(kernel_of(layer).numpy() == 0))
    return out


def to_tflite(saved_model_dir, quantization="none", representative=None, sparse=False) -> bytes:
    """Convert a SavedModel to TFLite; ``int8`` needs ``representative`` (an iterable of input batches).

    ``sparse``: weights are stored sparse where TFLite finds it worth it (``EXPERIMENTAL_SPARSITY``): a
    1x4-block ticket's dense layers then run TFLite's sparse kernel (``export_report.layer_paths`` says which)."""
    if quantization not in TFLITE_QUANTIZATION:
        raise ConfigError("tflite_quantization", f"{quantization!r} is not one of {list(TFLITE_QUANTIZATION)}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.optimizations = ([tf.lite.Optimize.DEFAULT] if quantization != "none" else []) + (
        [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    if quantization == "int8":
        if representative is None:
            raise LtKerasError("int8 TFLite export needs a representative dataset.")
        converter.representative_dataset = lambda: ([np.asarray(x, np.float32)] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def tflite_outputs(tflite_bytes, x) -> np.ndarray:
    """Run a TFLite model on ``x`` one example at a time (float inputs, quantized or not)."""
    interpreter, _ = tflite_interpreter(tflite_bytes)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], (1,) + x.shape[1:])
    interpreter.allocate_tensors()
    results = []
    for example in x:
        value = example[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            value = np.round(value / scale + zero).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        results.append(y[0])
    return np.stack(results)


def max_abs_diff(a, b) -> float:
    """Largest |a - b|; infinite when either holds a non-finite value, so no tolerance check passes NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.max(np.abs(a - b)))


def dense_twin(plain, model):
    """``plain`` with no zeros where ``model`` prunes: the size baseline of a dense export.

    Training stores zeros at pruned positions, so the masked layers' own kernels are as sparse as the export;
    a pruned entry that holds 0 gets a value drawn (seeded) from its layer's kept entries instead, so the
    baseline's kernels have the statistics of trained dense ones.
    """
    dense = keras.models.clone_model(plain)
    dense.set_weights(plain.get_weights())
    rng = np.random.RandomState(0)
    for (_, layer), (_, twin) in zip(weight_layers(model), weight_layers(dense)):
        if not is_masked(layer):
            continue
        kernel, mask = layer.kernel.numpy(), layer.kernel_mask.numpy()
        empty = (mask == 0) & (kernel == 0)
        kept = kernel[mask != 0]
        if empty.any() and kept.size:
            kernel = kernel.copy()
            kernel[empty] = rng.choice(kept, size=int(empty.sum()))
        kernel_of(twin).assign(kernel)
    return dense


EXPORT_MARK = os.path.join("assets.extra", "lt_keras_export.json")  # inside an export: whose export it is
SCRATCH_MARK = ".lt_keras_export_scratch"  # inside a scratch folder: a later export may remove it


def _fingerprint(model) -> str:
    """sha256 of a plain model's weights: the same ticket exported again has the same one."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _scratch(target):
    """A new folder beside ``target`` for this export's temporary files. mkdtemp gives a name no existing folder
    has, so a user's ``X.partial`` or ``X.tmp`` is never touched; the marker file lets a later export remove
    what a killed one left (and nothing else)."""
    parent, base = os.path.dirname(target) or ".", os.path.basename(target)
    for old in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(base)}.lt-export-*")):
        if os.path.isfile(os.path.join(old, SCRATCH_MARK)):
            shutil.rmtree(old, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=f".{base}.lt-export-", dir=parent)
    open(os.path.join(folder, SCRATCH_MARK), "w").close()
    return folder


def _ours(target, fingerprint):
    """Whether ``target`` holds a finished export of this very model (an earlier run killed before its report)."""
    try:
        with open(os.path.join(target, EXPORT_MARK)) as f:
            return json.load(f).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        return False


def export_ticket(model, saved_model_dir, x_check, tolerance=None):
    """Export ``model`` and measure it against the masked model on ``x_check``; returns the report.

    Everything is written and measured in a scratch folder beside
    ``saved_model_dir`` (a new name, never a user's folder) and renamed into
    place at the end, so a failure (or a parity gap above ``tolerance``)
    leaves no half-written export. One export writes a folder at a time (a
    lock beside it). A folder that already holds this model's export (a run
    killed before its report) is measured again, not refused: re-running
    completes what is missing.
    """
    target = os.path.abspath(saved_model_dir).rstrip("/")
    with _export_lock(target):
        return _export(model, target, saved_model_dir, x_check, tolerance)


_HELD = {}  # export target -> (lock file, depth): export_ticket_dir holds it around export_ticket


@contextlib.contextmanager
def _export_lock(target):
    """One export writes ``target`` (and its .tflite, .report.json) at a time: a lock file beside it."""
    path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lt-export.lock")
    if target in _HELD:
        handle, depth = _HELD[target]
        _HELD[target] = (handle, depth + 1)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            handle = take_lock(path, f"{target} is being exported by another process", "wait for it to finish")
        except RunDirError as e:
            raise ConfigError("saved_model_dir", e.message) from None
        sign_lock(handle)
        _HELD[target] = (handle, 1)
    try:
        yield
    finally:
        handle, depth = _HELD[target]
        if depth == 1:
            del _HELD[target]
            release_lock(handle, path)  # the user's folder keeps nothing of ours but the export
        else:
            _HELD[target] = (handle, depth - 1)


def _export(model, target, saved_model_dir, x_check, tolerance):
    plain = plain_model(model)
    fingerprint = _fingerprint(plain)
    resumed = _ours(target, fingerprint)
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)) and not resumed:
        raise ConfigError("saved_model_dir", f"{saved_model_dir} exists and is not empty; choose a new folder.")
    scratch = _scratch(target)
    try:
        if not resumed:
            save_saved_model(plain, os.path.join(scratch, "export"))
            atomic_write_text(os.path.join(scratch, "export", EXPORT_MARK), json.dumps({"fingerprint": fingerprint}))
        candidate = target if resumed else os.path.join(scratch, "export")
        loaded = tf.saved_model.load(candidate)
        exported = loaded.signatures["serving_default"](inputs=tf.constant(x_check))["logits"].numpy()
        reference = model(x_check, training=False).numpy()
        diff = max_abs_diff(exported, reference)
        if tolerance is not None and diff > tolerance:
            raise LtKerasError(f"the SavedModel differs from the masked model by {diff:.3g} (> {tolerance}); "
                               "nothing was written.")
        save_saved_model(dense_twin(plain, model), os.path.join(scratch, "dense_for_size"))
        dense_zip = zipped_size(os.path.join(scratch, "dense_for_size"))
        sparse_zip = zipped_size(candidate)
        if not resumed:
            if os.path.isdir(target):
                os.rmdir(target)  # empty: checked above
            os.replace(candidate, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sparsity = layer_sparsity(plain)
    kernels = [kernel_of(layer).numpy() for _, layer in weight_layers(plain)]
    return {
        "saved_model_dir": target,
        "layer_sparsity": sparsity,
        "total_sparsity": float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)),
        "parity_examples": int(len(x_check)),
        "max_abs_diff_saved_model": diff,
        "zipped_bytes_dense": dense_zip,
        "zipped_bytes_exported": sparse_zip,
        "zip_ratio": sparse_zip / dense_zip,
    }


SAVED_MODEL_TOLERANCE = 1e-5


def export_ticket_dir(ticket_dir, saved_model_dir, data, parity_examples=100, tflite_quantization=None,
                      representative_examples=200, measure_export=True, sparse_serving=False,
                      tflite_sparsity="auto", compact_export=False) -> dict:
    """lt-export as one call: the ticket in ``ticket_dir`` as a SavedModel (and TFLite), checked and reported.

    Fails (``LtKerasError``, nothing written) when the SavedModel differs from
    the masked model by more than ``SAVED_MODEL_TOLERANCE`` on
    ``parity_examples`` test inputs.
    ``tflite_quantization`` (none, dynamic, int8; None: no TFLite) adds
    ``<saved_model_dir>.tflite``, int8 calibrated on training examples, and
    the path TFLite takes for each layer; ``tflite_sparsity`` (auto, always,
    never) stores its weights sparse: auto does where that is never slower
    than the dense encoding at batch 1 and 64 (both are timed).
    ``measure_export`` measures sizes and
    latencies beside a dense export (``lt_keras.export_report``).
    ``sparse_serving`` adds ``<saved_model_dir>.sparse``, whose pruned Dense
    layers compute sparse at the batch sizes where that measured faster
    (``lt_keras.sparse_serving``), checked like the SavedModel; ``compact_export``
    adds ``<saved_model_dir>.compact``, the ticket without its dead units and
    channels (``lt_keras.compact``), checked the same way. The report is
    also written to ``<saved_model_dir>.report.json``.
    """
    ticket = load_ticket(ticket_dir)
    if tuple(ticket.model.input_shape[1:]) != tuple(data.input_shape):
        raise ConfigError("dataset", f"the ticket takes inputs of shape {tuple(ticket.model.input_shape[1:])}, but "
                           f"{data.spec.name} has {tuple(data.input_shape)}; pass the ticket's dataset.")
    target = os.path.abspath(saved_model_dir).rstrip("/")
    with _export_lock(target):
        return _export_files(ticket, ticket_dir, target, data, parity_examples, tflite_quantization,
                             representative_examples, measure_export, sparse_serving, tflite_sparsity, compact_export)


def _beside(target, suffix, save, x, reference, what):
    """``<target><suffix>``: a second SavedModel written by ``save(folder)`` beside the export, renamed into place
    once it computes the masked model's outputs at batch 1 and at full batch; returns (folder, max |diff|)."""
    folder = target + suffix
    if os.path.exists(folder) and not os.path.exists(os.path.join(folder, EXPORT_MARK)):
        raise ConfigError("saved_model_dir", f"{folder} exists and is not a {what} export of ours; move it or choose "
                          "another saved_model_dir.")
    scratch = _scratch(folder)
    try:
        save(os.path.join(scratch, "export"))
        atomic_write_text(os.path.join(scratch, "export", EXPORT_MARK), json.dumps({"variant": suffix}))
        serve = tf.saved_model.load(os.path.join(scratch, "export")).signatures["serving_default"]
        diff = max(max_abs_diff(serve(inputs=tf.constant(x[:1]))["logits"].numpy(), reference[:1]),
                   max_abs_diff(serve(inputs=tf.constant(x))["logits"].numpy(), reference))
        if diff > SAVED_MODEL_TOLERANCE:
            raise LtKerasError(f"the {what} SavedModel differs from the masked model by {diff:.3g} "
                               f"(> {SAVED_MODEL_TOLERANCE}); it was not written.")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(os.path.join(scratch, "export"), folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder, diff


def _sparse_export(plain, target, x, reference):
    """``<target>.sparse``: the sparse-serving SavedModel (``lt_keras.sparse_serving``)."""
    served, record = sparse_serving(plain)
    folder, diff = _beside(target, ".sparse", served.save, x, reference, "sparse-serving")
    return {"saved_model_dir": folder, "max_abs_diff": diff, **record}


def _compact_export(plain, target, x, reference):
    """``<target>.compact``: the ticket without its dead units and channels (``lt_keras.compact``)."""
    compacted = compact(plain)
    folder, diff = _beside(target, ".compact", lambda d: save_saved_model(compacted, d), x, reference, "compacted")
    return {"saved_model_dir": folder, "max_abs_diff": diff, "parameters": int(compacted.count_params()),
            "parameters_before": int(plain.count_params()), "layers": compaction_summary(plain, compacted)}


def _tflite(target, quantization, representative, sparsity, input_shape):
    """The .tflite of the SavedModel ``target`` and the record of its encoding: sparse (always), dense (never),
    or, with auto, sparse only where it is no slower than dense at any batch size of the report."""
    dense = to_tflite(target, quantization, representative, sparse=False)
    if sparsity == "never":
        return dense, {"setting": sparsity, "chosen": "dense"}
    sparse = to_tflite(target, quantization, representative, sparse=True)
    if sparsity == "always":
        return sparse, {"setting": sparsity, "chosen": "sparse"}
    ms = {b: median_ms([tflite_call(dense, b, input_shape), tflite_call(sparse, b, input_shape)], budget_s=0.6)
          for b in BATCHES}
    ratios = {str(b): s / d for b, (d, s) in ms.items()}
    chosen = "sparse" if max(ratios.values()) <= 1.0 else "dense"
    return (sparse if chosen == "sparse" else dense), {"setting": sparsity, "chosen": chosen,
                                                       "sparse_over_dense_ms": ratios}


def _export_files(ticket, ticket_dir, target, data, parity_examples, tflite_quantization, representative_examples,
                  measure_export, sparse_serving, tflite_sparsity, compact_export):
    x = data.x_test[:parity_examples]
    report = export_ticket(ticket.model, target, x, tolerance=SAVED_MODEL_TOLERANCE)
    report.update(ticket=os.path.abspath(ticket_dir), method=ticket.info.method,
                  found_at_precision=ticket.info.found_at_precision,
                  saved_model_tolerance=SAVED_MODEL_TOLERANCE)
    tflite, representative = None, data.x_train[:representative_examples][:, None]
    plain = plain_model(ticket.model)
    reference = ticket.model(x, training=False).numpy()
    if tflite_quantization is not None:
        tflite, report["tflite_encoding"] = _tflite(target, tflite_quantization, representative, tflite_sparsity,
                                                    data.input_shape)
        atomic_write_bytes(target + ".tflite", tflite)
        report["tflite_layer_paths"] = layer_paths(tflite, plain)
        outputs = tflite_outputs(tflite, x)
        report.update(tflite_path=target + ".tflite", tflite_quantization=tflite_quantization,
                      tflite_bytes=len(tflite), tflite_max_abs_diff=max_abs_diff(outputs, reference),
                      tflite_top1_agreement=float(np.mean(outputs.argmax(1) == reference.argmax(1))))
    if sparse_serving:
        report["sparse_serving"] = _sparse_export(plain, target, x, reference)
    if compact_export:
        report["compacted"] = _compact_export(plain, target, x, reference)
    if measure_export:
        with tempfile.TemporaryDirectory(prefix="lt_keras_dense_export_") as scratch:
            dense = save_saved_model(dense_twin(plain, ticket.model), os.path.join(scratch, "dense"))
            dense_tflite = None if tflite is None else to_tflite(dense, tflite_quantization, representative)
            variants = {"dense": (dense, dense_tflite), "ticket": (target, tflite)}
            if sparse_serving:
                variants["sparse_serving"] = (report["sparse_serving"]["saved_model_dir"], None)
            if compact_export:
                folder = report["compacted"]["saved_model_dir"]
                variants["compacted"] = (folder, None if tflite is None else
                                         to_tflite(folder, tflite_quantization, representative))
            report["measured"] = measure(variants, data.input_shape)
        report["measured"]["variants"]["dense"]["weights"] = int(plain.count_params())
        report["measured"]["variants"]["ticket"]["weights"] = int(sum(np.count_nonzero(w) for w in plain.get_weights()))
        if compact_export:
            report["measured"]["variants"]["compacted"]["weights"] = report["compacted"]["parameters"]
    atomic_write_json(target + ".report.json", report)
    return report
