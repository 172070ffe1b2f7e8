"""Mask-1 actions: what the kept weights start from when a ticket is rewound.

Zhou et al. (2019), section 3: keeping the initial values (``init``) versus
re-drawing, reshuffling or replacing them by constants. Each action is a small
function of (initial weights, mask, rng, fresh draw) for one tensor; the
result is zero wherever the mask is zero.
"""
import numpy as np

from lt_keras.errors import LtKerasError


def _init(w_init, mask, rng, fresh):
    return w_init


def _reinit(w_init, mask, rng, fresh):
    if fresh is None:
        raise LtKerasError("the 'reinit' action needs a fresh draw from the layer's initializer.")
    return fresh


def _reshuffle(w_init, mask, rng, fresh):
    kept = np.flatnonzero(mask.ravel())
    out = np.zeros(w_init.size, w_init.dtype)
    out[kept] = w_init.ravel()[kept][rng.permutation(kept.size)]
    return out.reshape(w_init.shape)


def _constant(w_init, mask, rng, fresh):
    signs = np.where(rng.random_sample(w_init.shape) < 0.5, -1.0, 1.0)
    return signs * np.std(w_init)


def _signed_constant(w_init, mask, rng, fresh):
    return np.sign(w_init) * np.std(w_init)


MASK1_ACTIONS = {
    "init": _init,
    "reinit": _reinit,
    "reshuffle": _reshuffle,
    "constant": _constant,
    "signed_constant": _signed_constant,
}


def mask1_action_names():
    return list(MASK1_ACTIONS)


def apply_mask1(action, w_init, mask, rng=None, fresh=None):
    """Starting values of one tensor's kept weights under ``action`` (zero where pruned).

    ``std`` for the constant actions is the standard deviation of the layer's
    whole initial tensor, as in the paper.
    """
    if action not in MASK1_ACTIONS:
        raise LtKerasError(f"--mask1: unknown action {action!r}; choose one of {mask1_action_names()}.")
    w_init = np.asarray(w_init, np.float32)
    mask = np.asarray(mask, np.float32)
    if w_init.shape != mask.shape:
        raise LtKerasError(f"weights of shape {w_init.shape} do not fit a mask of shape {mask.shape}.")
    rng = rng if rng is not None else np.random.RandomState(0)
    values = np.asarray(MASK1_ACTIONS[action](w_init, mask, rng, fresh), np.float32)
    return values * mask
