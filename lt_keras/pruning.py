"""The one place where scores become masks: exact counts, seeded random ties.

Layer-wise allocation prunes exactly ``prune_count(rate, remaining)`` of each
layer's surviving weights; global allocation pools every layer's survivors and
prunes that count of the pool. Pruned weights stay pruned. Equal scores are
pruned in a random order drawn from ``rng``, as Zhou et al.'s code does
(``np.lexsort((np.random.random(n), scores))``): criteria that give a whole
group one score (the sign criteria score every excluded weight 0) prune a
random part of it, never the first rows. Without ``rng`` ties go by flat index.
"""
import numpy as np

from lt_keras.errors import LtKerasError
from lt_keras.mask import Mask


def _check_rate(name, rate):
    if not 0.0 < rate < 1.0:
        raise LtKerasError(f"{name}: pruning rate must be in (0, 1), got {rate}.")


COUNT_RULES = ("floor", "round", "ceil")


def prune_count(rate, remaining, rule="round"):
    """Weights to prune from ``remaining`` at ``rate``.

    ``floor`` truncates, as Zhou et al.'s code (``int(sum(mask) * percent / 100)``);
    ``round`` rounds half up (lt_keras before 0.4); ``ceil`` as open_lth's
    ``np.ceil(fraction * remaining)``. (Frankle & Carbin's code prunes
    ``round(rate * n) + 1``: every weight at or below the value at that index.)
    Zhou et al. compute the rate as ``(1 - 0.8) * 100 / 100``, one ulp below
    0.2, so where ``0.2 * n`` is a whole number their count is one lower than
    ``floor`` at ``rate=0.2``; at the same rate value the counts are equal.
    """
    if rule not in COUNT_RULES:
        raise LtKerasError(f"prune_count: {rule!r} is not one of {list(COUNT_RULES)}.")
    exact = rate * remaining  # as each code base computes it, float error included
    count = {"floor": np.floor(exact), "round": np.floor(exact + 0.5), "ceil": np.ceil(exact)}[rule]
    return int(min(max(count, 0), remaining))


def _lowest(scores_flat, alive_flat, count, rng=None):
    """Flat indices of the ``count`` lowest-scoring alive entries; ties in a random order from ``rng`` (by
    index without one)."""
    alive = np.flatnonzero(alive_flat)
    tie_keys = alive if rng is None else rng.random_sample(alive.size)
    order = np.lexsort((tie_keys, scores_flat[alive]))  # primary: score, secondary: the tie key
    return alive[order[:count]]


def prune_layerwise(scores: dict, mask: Mask, rates: dict, rng=None, count_rule="round") -> Mask:
    """Prune each tensor in ``rates`` by its own rate; tensors not in ``rates`` stay as they are."""
    _check_keys(scores, mask)
    out = {}
    for key, current in mask.items():
        new = current.copy().ravel()
        if key in rates:
            _check_rate(f"rate for {key}", rates[key])
            count = prune_count(rates[key], int(current.sum()), count_rule)
            new[_lowest(np.asarray(scores[key], np.float64).ravel(), new > 0, count, rng)] = 0.0
        out[key] = new.reshape(current.shape)
    return Mask(out)


def prune_global(scores: dict, mask: Mask, rate: float, keys=None, rng=None, count_rule="round") -> Mask:
    """Prune ``rate`` of the surviving weights pooled across ``keys`` (default: all)."""
    _check_keys(scores, mask)
    _check_rate("prune_rate", rate)
    keys = list(mask) if keys is None else list(keys)
    flat_scores = np.concatenate([np.asarray(scores[k], np.float64).ravel() for k in keys])
    flat_mask = np.concatenate([mask[k].ravel() for k in keys])
    count = prune_count(rate, int(flat_mask.sum()), count_rule)
    flat_mask = flat_mask.copy()
    flat_mask[_lowest(flat_scores, flat_mask > 0, count, rng)] = 0.0
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


def prune_in_pattern(scores: dict, mask: Mask, pattern, keys, prune, rng=None) -> Mask:
    """Prune the tensors in ``keys`` in ``pattern``'s units (``lt_keras.patterns``), the others weight by weight.

    Blocks: ``prune(unit_scores, unit_mask)`` (``prune_layerwise`` or
    ``prune_global`` with their rates) prunes whole blocks, each scored by its
    weights' mean and counted as one unit. n:m: the tensors in ``keys`` keep
    the best n of every m; ``prune`` prunes the others.
    """
    keys = [k for k in keys if k in mask]
    if not pattern.structured or not keys:
        return prune(scores, mask)
    if pattern.kind == "n:m":
        others = Mask({k: v for k, v in mask.items() if k not in keys})
        rest = prune({k: v for k, v in scores.items() if k not in keys}, others) if len(others) else others
        return Mask({k: pattern.keep_n_of_m(scores[k], mask[k], rng) if k in keys else rest[k] for k in mask})
    units = {k: pattern.block_scores(scores[k], mask[k]) if k in keys else (scores[k], mask[k]) for k in mask}
    pruned = prune({k: s for k, (s, _) in units.items()},
                   Mask({k: np.asarray(a, np.float32) for k, (_, a) in units.items()}))
    return Mask({k: pattern.expand_blocks(pruned[k], mask[k].shape) if k in keys else pruned[k] for k in mask})
