"""``Mask``: the one in-memory form of a pruning mask, for every method.

A mask maps stable variable names (``"<layer name>/kernel"``) to 0/1 arrays.
IMP rounds, supermasks and Early-Bird all produce one; tickets store one as
``mask.npz`` next to a JSON density report.
"""
import io
import os
from collections.abc import Mapping

import numpy as np

from lt_keras.errors import MaskError
from lt_keras.io_utils import atomic_write_bytes, atomic_write_json
from lt_keras.layers import masked_layers

KERNEL_SUFFIX = "/kernel"


def _shared_name(variable):
    return variable.name.split(":")[0]


def _optimizer_slots(model) -> dict:
    """The optimizer's per-variable state (momenta, second moments), keyed by the variable's name.

    Keras names a slot after its variable: ``Adam/m/<layer>/kernel`` (Keras 2's
    optimizers) or ``Adam/<layer>/kernel/m`` (the legacy ones); neither offers
    a public slot lookup for every optimizer.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return {}
    variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    names = {_shared_name(w) for w in model.trainable_weights}
    out = {}
    for slot in variables:
        parts = _shared_name(slot).split("/")
        for candidate in ("/".join(parts[2:]), "/".join(parts[1:-1])):
            if candidate in names:
                out.setdefault(candidate, []).append(slot)
                break
    return out


def mask_key(layer) -> str:
    """Stable mask key for a masked layer: its (explicit) name + ``/kernel``."""
    return layer.name + KERNEL_SUFFIX


def pattern_keys(model) -> list:
    """Mask keys of the layers a sparsity pattern applies to (kernels laid out ``(..., fan_in, out)``)."""
    return [mask_key(layer) for layer in masked_layers(model) if layer.fan_in_by_out]


def _as_binary(name, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == bool:
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.number):
        raise MaskError(f"mask entry {name!r} has non-numeric dtype {array.dtype}.")
    if not np.all((array == 0) | (array == 1)):
        bad = array[(array != 0) & (array != 1)].ravel()[:3].tolist()
        raise MaskError(f"mask entry {name!r} is not binary: it holds values like {bad}.")
    return array.astype(np.float32)


class Mask(Mapping):
    """Immutable mapping from variable name to a float32 0/1 array."""

    def __init__(self, arrays: Mapping):
        if not isinstance(arrays, Mapping):
            raise MaskError(f"a Mask is built from a mapping, got {type(arrays).__name__}.")
        self._arrays = {str(k): _as_binary(k, v) for k, v in arrays.items()}
        for array in self._arrays.values():
            array.setflags(write=False)

    # Mapping protocol.
    def __getitem__(self, key):
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    def __repr__(self):
        return f"Mask({len(self)} tensors, density={self.density():.4f})"

    def __eq__(self, other):
        if not isinstance(other, Mask) or set(self) != set(other):
            return False
        return all(np.array_equal(self[k], other[k]) for k in self)

    __hash__ = None

    # Construction from and application to models.
    @classmethod
    def ones_like(cls, model) -> "Mask":
        return cls({mask_key(l): np.ones(l.kernel.shape, np.float32) for l in masked_layers(model)})

    @classmethod
    def from_model(cls, model) -> "Mask":
        """The masks currently held by the model's masked layers."""
        layers = masked_layers(model)
        if not layers:
            raise MaskError(
                f"model {model.name!r} has no masked layers; convert it with lt_keras.mask_model first."
            )
        return cls({mask_key(l): l.kernel_mask.numpy() for l in layers})

    def check_fits(self, model):
        """Raise MaskError unless keys and shapes match the model's masked layers exactly."""
        layers = {mask_key(l): l for l in masked_layers(model)}
        missing = sorted(set(layers) - set(self))
        extra = sorted(set(self) - set(layers))
        if missing or extra:
            raise MaskError(
                f"mask does not fit model {model.name!r}: missing keys {missing}, "
                f"unknown keys {extra}; the model's keys are {sorted(layers)}."
            )
        for key, layer in layers.items():
            if tuple(layer.kernel.shape) != self[key].shape:
                raise MaskError(
                    f"mask entry {key!r} has shape {self[key].shape}, but the layer's "
                    f"kernel has shape {tuple(layer.kernel.shape)}."
                )
        return layers

    def apply_to(self, model):
        """Assign these masks to the model's masked layers (all keys must match) and store zeros at the pruned
        kernel entries and in the optimizer's slots for them: ``layer.kernel`` (``get_weights()``,
        checkpoints) then holds exactly what the layer computes with, and since a pruned entry's gradient is
        zero and its momentum is zero, training keeps it zero (every optimizer, with or without weight
        decay), also when a mask changes in the middle of a user's training."""
        slots = _optimizer_slots(model)
        for key, layer in self.check_fits(model).items():
            mask = self[key]
            layer.kernel_mask.assign(mask)
            layer.kernel.assign(np.where(mask == 0, 0, layer.kernel.numpy()).astype(layer.kernel.dtype.as_numpy_dtype))
            for slot in slots.get(_shared_name(layer.kernel), ()):
                if tuple(slot.shape) == mask.shape:
                    slot.assign(np.where(mask == 0, 0, slot.numpy()).astype(slot.dtype.as_numpy_dtype))
        return model

    # Statistics.
    def counts(self) -> dict:
        """``{name: (kept, total)}`` per tensor."""
        return {k: (int(v.sum()), int(v.size)) for k, v in self._arrays.items()}

    def layer_densities(self) -> dict:
        return {k: kept / total if total else 1.0 for k, (kept, total) in self.counts().items()}

    def density(self) -> float:
        kept = sum(k for k, _ in self.counts().values())
        total = sum(t for _, t in self.counts().values())
        return kept / total if total else 1.0

    def report(self) -> dict:
        counts = self.counts()
        return {
            "density": self.density(),
            "kept": sum(k for k, _ in counts.values()),
            "total": sum(t for _, t in counts.values()),
            "layers": {
                k: {"kept": kept, "total": total, "density": kept / total if total else 1.0}
                for k, (kept, total) in counts.items()
            },
        }

    def hamming_distance(self, other: "Mask", normalized: bool = True) -> float:
        """Number (or fraction) of positions where the two masks differ."""
        if set(self) != set(other):
            raise MaskError(
                f"cannot compare masks with different keys: {sorted(set(self) ^ set(other))}."
            )
        for k in self:
            if self[k].shape != other[k].shape:
                raise MaskError(f"mask entry {k!r} has shapes {self[k].shape} and {other[k].shape}.")
        differing = sum(int(np.count_nonzero(self[k] != other[k])) for k in self)
        total = sum(self[k].size for k in self)
        return differing / total if normalized and total else float(differing)

    # Persistence.
    def save(self, path) -> str:
        """Write ``path`` (.npz) and a JSON density report beside it, atomically."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        buffer = io.BytesIO()
        # Keys hold '/', which npz stores fine as archive member names.
        np.savez_compressed(buffer, **{k: v.astype(np.uint8) for k, v in self._arrays.items()})
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_json(path[: -len(".npz")] + ".json", self.report())
        return path

    @classmethod
    def load(cls, path) -> "Mask":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise MaskError(f"mask file {path} does not exist.")
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as e:  # numpy raises OSError, ValueError, BadZipFile, EOFError... for a broken file
            raise MaskError(f"mask file {path} is not a readable .npz archive: {e}") from None
        if not hasattr(loaded, "files"):
            raise MaskError(f"mask file {path} holds one bare array, not an .npz archive of named masks.")
        try:
            with loaded as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as e:
            raise MaskError(f"mask file {path} is a damaged .npz archive: {e}") from None
        return cls(arrays)

