"""Mask criteria: which weights to keep, as scoring functions (higher = keep).

Each criterion is ``score(w_init, w_final, rng, kept) -> array`` over one
tensor, as in jaxpruner; the count/threshold arithmetic lives once, in
``pruning.py``. Names and definitions follow Zhou et al. (2019), figure 2:
regions of the (w_init, w_final) plane that are kept. ``kept`` is the current
0/1 mask: the two quadrant criteria rank among the kept weights only.
"""
import numpy as np

from lt_keras.errors import ConfigError, LtKerasError


def _large_final(wi, wf, rng, kept):
    return np.abs(wf)


def _small_final(wi, wf, rng, kept):
    return -np.abs(wf)


def _large_init(wi, wf, rng, kept):
    return np.abs(wi)


def _small_init(wi, wf, rng, kept):
    return -np.abs(wi)


def _percentile_ranks(x, kept):
    """Each kept entry's rank among the kept entries, scaled to [0, 1) (ties by index); pruned entries -1."""
    kept = np.asarray(kept).reshape(-1) > 0
    ranks = np.full(x.size, -1.0)
    values = x.reshape(-1)[kept]
    ranks[kept] = np.argsort(np.argsort(values, kind="stable"), kind="stable") / max(values.size, 1)
    return ranks.reshape(x.shape)


def _large_init_large_final(wi, wf, rng, kept):
    # As the authors' code: kept when |w_init| and |w_final| both clear the same percentile of their own
    # distribution (the two scales differ, so one absolute threshold would select by the smaller scale alone).
    return np.minimum(_percentile_ranks(np.abs(wi), kept), _percentile_ranks(np.abs(wf), kept))


def _small_init_small_final(wi, wf, rng, kept):
    return np.minimum(_percentile_ranks(-np.abs(wi), kept), _percentile_ranks(-np.abs(wf), kept))


def _magnitude_increase(wi, wf, rng, kept):
    return np.abs(wf) - np.abs(wi)


def _movement(wi, wf, rng, kept):
    return np.abs(wf - wi)


def _random(wi, wf, rng, kept):
    return rng.random_sample(np.shape(wf))


def _same_sign(wi, wf):
    return np.sign(wi) == np.sign(wf)


# The sign criteria, as the authors' code (get_weight_init.py): the excluded group scores 0, one tied group that
# the pruning draws from at random (lt_keras.pruning), the others their criterion's score.
def _large_final_same_sign(wi, wf, rng, kept):
    return np.where(_same_sign(wi, wf), np.abs(wf), 0.0)


def _large_final_diff_sign(wi, wf, rng, kept):
    return np.where(~_same_sign(wi, wf), np.abs(wf), 0.0)


def _magnitude_increase_same_sign(wi, wf, rng, kept):
    return np.where(_same_sign(wi, wf), np.abs(wf) - np.abs(wi), 0.0)


def _magnitude_increase_diff_sign(wi, wf, rng, kept):
    return np.where(~_same_sign(wi, wf), np.abs(wf) - np.abs(wi), 0.0)


CRITERIA = {
    "large_final": _large_final,
    "small_final": _small_final,
    "large_init": _large_init,
    "small_init": _small_init,
    "large_init_large_final": _large_init_large_final,
    "small_init_small_final": _small_init_small_final,
    "magnitude_increase": _magnitude_increase,
    "movement": _movement,
    "random": _random,
    "large_final_same_sign": _large_final_same_sign,
    "large_final_diff_sign": _large_final_diff_sign,
    "magnitude_increase_same_sign": _magnitude_increase_same_sign,
    "magnitude_increase_diff_sign": _magnitude_increase_diff_sign,
}


def criterion_names():
    return list(CRITERIA)


def score(criterion, w_init, w_final, rng=None, kept=None):
    """Keep-scores of one tensor under ``criterion`` (float64, same shape); ``kept``: its current 0/1 mask."""
    if criterion not in CRITERIA:
        raise ConfigError("criterion", f"unknown criterion {criterion!r}; choose one of {criterion_names()}.")
    w_init, w_final = np.asarray(w_init, np.float64), np.asarray(w_final, np.float64)
    if w_init.shape != w_final.shape:
        raise LtKerasError(f"initial and final weights differ in shape: {w_init.shape} vs {w_final.shape}.")
    rng = rng if rng is not None else np.random.RandomState(0)
    kept = np.ones(w_init.shape) if kept is None else np.asarray(kept)
    return np.asarray(CRITERIA[criterion](w_init, w_final, rng, kept), np.float64)
