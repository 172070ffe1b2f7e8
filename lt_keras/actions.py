"""Mask-1 and mask-0 actions: what the kept and the pruned weights hold when a ticket is rewound.

Zhou et al. (2019), sections 3 and 4, following the authors' code
(``train_lottery.py``'s ``--exp`` and ``--model_type``):

Mask-1 (kept weights; zero wherever the mask is zero):
  init               theta_0 itself.
  reinit             a fresh draw from the layer's initializer.
  reshuffle          theta_0's kept values permuted among the kept positions.
  constant           +-std(theta_0) with random signs (the paper's ``rand_signed_constant``).
  signed_reinit      |fresh draw| with theta_0's signs.
  signed_reshuffle   the kept |theta_0| permuted among the kept positions, each position keeping its own sign.
  signed_constant    sign(theta_0) * std(theta_0).
With ``rescaling`` the kept values are multiplied by numel / ones of the
layer's mask (the paper's ``*_rescaling`` variants).

Iterative chains: as the authors' ``train_lottery.py`` (each round's
``--prev_weights`` is the previous round's run, whose first saved weights
are that round's start), the action of round k applies to round k-1's
starting tensor (``mask1_start``), so a reshuffle permutes the values the
chain kept; the ``*_rescaling`` variants start from theta_0 each round
(their ``--orig_weights``). ``reinit`` draws from the layer's initializer
where the authors' code permutes the whole tensor (the same distribution
for an i.i.d. initializer).

Mask-0 (pruned weights; values of a frozen, non-trainable tensor):
  zero                        0 (the lottery ticket).
  freeze_init                 theta_0.
  freeze_init_zero_mask       theta_0, but 0 where the weight moved toward zero in training (|theta_0| > |theta_final|).
  freeze_init_zero_all        as freeze_init_zero_mask; the kept weights that moved toward zero also start at 0.
  freeze_init_zero_reshuffle  control: as many pruned weights at 0 as freeze_init_zero_mask, at random pruned positions.
  freeze_init_zero_rev        control: 0 where the pruned weight moved away from zero (|theta_0| < |theta_final|).
"""
import numpy as np

from lt_keras.errors import ConfigError, LtKerasError


def _init(w_init, mask, rng, fresh):
    return w_init


def _reinit(w_init, mask, rng, fresh):
    if fresh is None:
        raise LtKerasError("the 'reinit' action needs a fresh draw from the layer's initializer.")
    return fresh


def _reshuffle(w_init, mask, rng, fresh):
    kept = np.flatnonzero(mask.ravel())
    out = w_init.copy().ravel()  # the pruned positions keep their values, as in the authors' code
    out[kept] = w_init.ravel()[kept][rng.permutation(kept.size)]
    return out.reshape(w_init.shape)


def _constant(w_init, mask, rng, fresh):
    signs = np.where(rng.random_sample(w_init.shape) < 0.5, -1.0, 1.0)
    return signs * np.std(w_init)


def _signed_constant(w_init, mask, rng, fresh):
    return np.sign(w_init) * np.std(w_init)


def _signed_reinit(w_init, mask, rng, fresh):
    return np.sign(w_init) * np.abs(_reinit(w_init, mask, rng, fresh))


def _signed_reshuffle(w_init, mask, rng, fresh):
    return np.sign(w_init) * np.abs(_reshuffle(w_init, mask, rng, fresh))


MASK1_ACTIONS = {
    "init": _init,
    "reinit": _reinit,
    "reshuffle": _reshuffle,
    "constant": _constant,
    "signed_reinit": _signed_reinit,
    "signed_reshuffle": _signed_reshuffle,
    "signed_constant": _signed_constant,
}
NEEDS_FRESH_DRAW = ("reinit", "signed_reinit")


def mask1_action_names():
    return list(MASK1_ACTIONS)


def _check_shapes(mask, *arrays):
    for array in arrays:
        if array.shape != mask.shape:
            raise LtKerasError(f"weights of shape {array.shape} do not fit a mask of shape {mask.shape}.")


def apply_mask1(action, w_init, mask, rng=None, fresh=None, rescaling=False):
    """Starting values of one tensor's kept weights under ``action`` (zero where pruned).

    ``std`` for the constant actions is the standard deviation of the layer's
    whole initial tensor, as in the paper. ``fresh`` is a new draw from the
    layer's initializer (``reinit``, ``signed_reinit``).
    """
    return mask1_start(action, w_init, mask, rng, fresh, rescaling) * np.asarray(mask, np.float32)


def mask1_start(action, w_init, mask, rng=None, fresh=None, rescaling=False):
    """The whole starting tensor under ``action``, pruned positions included (what the next round of an
    iterative chain applies its action to; ``apply_mask1`` is this times the mask)."""
    if action not in MASK1_ACTIONS:
        raise ConfigError("mask1", f"unknown action {action!r}; choose one of {mask1_action_names()}.")
    w_init = np.asarray(w_init, np.float32)
    mask = np.asarray(mask, np.float32)
    _check_shapes(mask, w_init)
    if fresh is not None:
        fresh = np.asarray(fresh, np.float32)
        _check_shapes(mask, fresh)
    rng = rng if rng is not None else np.random.RandomState(0)
    values = np.asarray(MASK1_ACTIONS[action](w_init, mask, rng, fresh), np.float32)
    if rescaling:
        values *= np.float32(mask.size / max(1.0, float(mask.sum())))
    return values


def _moved_toward_zero(w_init, w_final):
    return np.abs(w_init) > np.abs(w_final)


def _frozen_init(w_init, w_final, mask, rng):
    return w_init


def _frozen_zero_mask(w_init, w_final, mask, rng):
    return np.where(_moved_toward_zero(w_init, w_final), 0.0, w_init)


def _frozen_zero_reshuffle(w_init, w_final, mask, rng):
    pruned = np.flatnonzero(mask.ravel() == 0)
    count = int(np.count_nonzero(_moved_toward_zero(w_init, w_final).ravel()[pruned]))
    out = w_init.copy().ravel()
    out[rng.choice(pruned, count, replace=False)] = 0.0
    return out.reshape(w_init.shape)


def _frozen_zero_rev(w_init, w_final, mask, rng):
    return np.where(np.abs(w_init) < np.abs(w_final), 0.0, w_init)


MASK0_ACTIONS = {
    "zero": None,
    "freeze_init": _frozen_init,
    "freeze_init_zero_mask": _frozen_zero_mask,
    "freeze_init_zero_all": _frozen_zero_mask,
    "freeze_init_zero_reshuffle": _frozen_zero_reshuffle,
    "freeze_init_zero_rev": _frozen_zero_rev,
}


def check_mask0(action):
    """The one validation of a mask-0 action name (configs, ``mask_model`` and the masked layers call it)."""
    if action not in MASK0_ACTIONS:
        raise ConfigError("mask0", f"{action!r} is not one of {list(MASK0_ACTIONS)}.")
    return action


NEEDS_FINAL_WEIGHTS = ("freeze_init_zero_mask", "freeze_init_zero_all", "freeze_init_zero_reshuffle",
                       "freeze_init_zero_rev")


def apply_mask0(action, w_init, w_final, mask, rng=None):
    """The frozen values of one tensor's pruned weights under ``action`` (zero where kept).

    ``w_final`` is the trained tensor the mask was computed from (theta_final
    of the round that pruned); ``freeze_init`` ignores it.
    """
    if action not in MASK0_ACTIONS or action == "zero":
        frozen = [name for name in MASK0_ACTIONS if name != "zero"]
        raise ConfigError("mask0", f"{action!r} has no frozen values; choose one of {frozen}.")
    w_init, w_final = np.asarray(w_init, np.float32), np.asarray(w_final, np.float32)
    mask = np.asarray(mask, np.float32)
    _check_shapes(mask, w_init, w_final)
    rng = rng if rng is not None else np.random.RandomState(0)
    return np.asarray(MASK0_ACTIONS[action](w_init, w_final, mask, rng), np.float32) * (1.0 - mask)


def kept_start(action, values, w_init, w_final):
    """The kept weights' starting ``values`` under a mask-0 action: ``freeze_init_zero_all`` zeroes the kept
    weights that moved toward zero too; every other action leaves them."""
    if action != "freeze_init_zero_all":
        return values
    return np.where(_moved_toward_zero(np.asarray(w_init), np.asarray(w_final)), 0.0, values).astype(np.float32)
