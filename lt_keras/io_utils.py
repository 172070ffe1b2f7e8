"""Atomic file writes: a file either holds its complete content or does not exist.

Everything a run directory holds is written to a temporary name in the same
folder and renamed into place, so a killed process never leaves a partial
file that looks complete.
"""
import json
import os
import tempfile

import numpy as np

from lt_keras.errors import LtKerasError


def atomic_write_bytes(path, data: bytes):
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the mode open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    """Strict JSON: a NaN or infinity is refused (``LtKerasError``), never written as an invalid token."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    except ValueError as e:
        raise LtKerasError(f"refusing to write {path}: it would hold a non-finite number ({e}).") from None
    atomic_write_text(path, text + "\n")


def atomic_save_model(model, path):
    """Save a Keras model atomically (Keras insists on the .keras suffix for the temporary too)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".partial.{os.getpid()}.{os.path.basename(path)}")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _jsonable(value):
    """numpy scalars and arrays in summaries become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")



def save_weights(path, weights):
    """A list of arrays (``model.get_weights()`` order) as ``.npz`` with keys w0, w1, ..., atomically."""
    tmp = f"{path}.tmp.npz"
    try:
        np.savez(tmp, **{f"w{i}": w for i, w in enumerate(weights)})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_weights(path):
    with np.load(path) as f:
        return [f[f"w{i}"] for i in range(len(f.files))]
