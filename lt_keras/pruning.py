"""The one place where scores become masks: exact counts, deterministic ties.

Layer-wise allocation prunes exactly ``round(rate * remaining)`` of each
layer's surviving weights; global allocation pools every layer's survivors and
prunes ``round(rate * remaining)`` of the pool. Pruned weights stay pruned.
Ties are broken by flat index (the earlier index is pruned first), so a mask
depends only on scores, never on sort stability or platform.
"""
import numpy as np

from lt_keras.errors import LtKerasError
from lt_keras.mask import Mask


def _check_rate(name, rate):
    if not 0.0 < rate < 1.0:
        raise LtKerasError(f"{name}: pruning rate must be in (0, 1), got {rate}.")


def prune_count(rate, remaining):
    """Weights to prune from ``remaining``: round half up, as the papers' code does."""
    return int(np.floor(rate * remaining + 0.5))


def _lowest(scores_flat, alive_flat, count):
    """Flat indices of the ``count`` lowest-scoring alive entries (ties: lowest index first)."""
    alive = np.flatnonzero(alive_flat)
    order = np.lexsort((alive, scores_flat[alive]))  # primary: score, secondary: index
    return alive[order[:count]]


def prune_layerwise(scores: dict, mask: Mask, rates: dict) -> Mask:
    """Prune each tensor in ``rates`` by its own rate; tensors not in ``rates`` stay as they are."""
    _check_keys(scores, mask)
    out = {}
    for key, current in mask.items():
        new = current.copy().ravel()
        if key in rates:
            _check_rate(f"rate for {key}", rates[key])
            count = prune_count(rates[key], int(current.sum()))
            new[_lowest(np.asarray(scores[key], np.float64).ravel(), new > 0, count)] = 0.0
        out[key] = new.reshape(current.shape)
    return Mask(out)


def prune_global(scores: dict, mask: Mask, rate: float, keys=None) -> Mask:
    """Prune ``rate`` of the surviving weights pooled across ``keys`` (default: all)."""
    _check_keys(scores, mask)
    _check_rate("prune_rate", rate)
    keys = list(mask) if keys is None else list(keys)
    flat_scores = np.concatenate([np.asarray(scores[k], np.float64).ravel() for k in keys])
    flat_mask = np.concatenate([mask[k].ravel() for k in keys])
    count = prune_count(rate, int(flat_mask.sum()))
    flat_mask = flat_mask.copy()
    flat_mask[_lowest(flat_scores, flat_mask > 0, count)] = 0.0
    out, offset = dict(mask), 0
    for k in keys:
        size = mask[k].size
        out[k] = flat_mask[offset : offset + size].reshape(mask[k].shape)
        offset += size
    return Mask(out)


def _check_keys(scores, mask):
    missing = sorted(set(mask) - set(scores))
    if missing:
        raise LtKerasError(f"no scores for mask entries {missing}.")
    for k in mask:
        if np.shape(scores[k]) != mask[k].shape:
            raise LtKerasError(f"scores for {k!r} have shape {np.shape(scores[k])}, mask has {mask[k].shape}.")


def random_mask_like(mask: Mask, rng) -> Mask:
    """A random mask with exactly the same number of kept weights per tensor (random-prune control)."""
    out = {}
    for k, m in mask.items():
        flat = np.zeros(m.size, np.float32)
        flat[rng.permutation(m.size)[: int(m.sum())]] = 1.0
        out[k] = flat.reshape(m.shape)
    return Mask(out)
