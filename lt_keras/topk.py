"""Exact top-k 0/1 masks without sorting: the per-step selection of edge-popup supermasks.

``tf.math.top_k`` sorts, which costs ~18 ms for LeNet's 235K-weight layer on
a CPU (~40 ms under XLA): ten times a whole training step. The k-th largest
magnitude is found instead from the bit patterns of ``|x|``, which order like
the values, compiled with XLA whether or not the caller is.

From scratch (``top_k_mask``), a radix select of two histogram passes: the
top 16 bits, then the low 15 bits inside the one band of the top bits that
holds the k-th value. ``TopKMasks`` follows a tensor that changes step to
step and remembers its last k-th value: one pass counts, per row of 32
entries, the entries at or above four thresholds spaced around it (packed
into one float sum per row, so the pass is a matrix-vector product). The
interval that holds the new k-th has few entries (the spacing adapts to
keep ~64 there): the rows holding them are gathered, the entries compacted
and ranked against each other. Tied entries that do not all fit are kept by
lowest index, as a stable sort would: the mask is ``|x| > kth or (|x| ==
kth and index <= cut)``, whatever was remembered; the tied entries are among
the gathered ones, so their indices are ranked the same way. When the k-th
left the thresholds' span or its interval is too full, the two-pass select
runs.
"""
import numpy as np

from lt_keras._keras import tf
from lt_keras.straight_through import product

_SIGN_OFF = 0x7FFFFFFF
_LOW_BITS = 15
_LOW = (1 << _LOW_BITS) - 1
_ROW = 32  # entries per row of the counting pass
_THRESHOLDS = 4  # counted in one pass: per-row counts in base _ROW + 1 stay exact float32 integers
_GROUP = 2  # rows gathered together
_GROUPS_KEPT = 128  # groups of rows gathered around the k-th (8,192 keys)
_MAX_SPACING = 1 << 24  # threshold spacing, in keys
_TARGET = 64  # entries wanted in the interval of the k-th; the spacing adapts to it
_FEW = 128  # at most this many keys in the interval of the k-th: ranked against each other
_BASE = _ROW + 1


def _triangle(m, strict=False, dtype=np.float32):
    """Upper-triangular ones: suffix and prefix sums as products (XLA's CPU cumsum is quadratic)."""
    return tf.constant(np.triu(np.ones((m, m), dtype), 1 if strict else 0))


class TopKMasks:
    """Top-k masks of one tensor as it changes, remembering its last k-th largest magnitude.

    A plain object, not a Keras weight: what it remembers (the k-th key and
    the threshold spacing) only saves work and is never saved with a model.
    """

    def __init__(self):
        with tf.init_scope():
            self._state = tf.Variable([-1, 1 << 12], dtype=tf.int32, trainable=False, name="last_kth_and_spacing",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def __call__(self, values, k: int, *factors):
        """The top-k 0/1 mask of |values| and edge-popup's straight-through slope sign(values) (d|x|/dx),
        both times ``factors`` (a fixed mask, the kernel), from one compiled pass."""
        _check_k(values, k)
        mask, slope, state = _top_k_mask_near(values, tf.constant(k, tf.int32), self._state,
                                              [tf.cast(f, values.dtype) for f in factors])
        self._state.assign(state)  # here, not in the compiled call: a tf.distribute replica context allows it
        return mask, slope


def top_k_mask(values, k: int):
    """0/1 tensor shaped like ``values`` with ones at its ``k`` largest magnitudes."""
    flat, k = _flat(values, k)
    return tf.reshape(tf.cast(_top_k_keep(flat, k), values.dtype), tf.shape(values))


def _check_k(values, k):
    n = int(np.prod(values.shape))
    if not 1 <= k <= n:
        raise ValueError(f"top_k_mask: k must be in [1, {n}], got {k}.")


def _flat(values, k):
    _check_k(values, k)
    return tf.reshape(tf.cast(values, tf.float32), [-1]), tf.constant(k, tf.int32)


def _keys(flat):
    return tf.bitwise.bitwise_and(tf.bitcast(flat, tf.int32), _SIGN_OFF)  # |x|, ordered as integers


def _keep(keys, kth, cut):
    return tf.logical_or(keys > kth, tf.logical_and(tf.equal(keys, kth), tf.range(tf.size(keys)) <= cut))


@tf.function(jit_compile=True)
def _top_k_keep(flat, k):
    keys = _keys(flat)
    return _keep(keys, *_exact(keys, k))


@tf.function(jit_compile=True)
def _top_k_mask_near(values, k, state, factors):
    """The 0/1 mask and sign(values), both times ``factors``, and the state to remember."""
    flat = tf.reshape(tf.cast(values, tf.float32), [-1])
    last, spacing = state[0], state[1]
    kth, found, entries, too_full, lost, cut = _near(_keys(flat), k, last, spacing)
    # Each use recomputes the keys from the scores: cheaper than writing them out and reading them back.
    kth, cut = tf.cond(found, lambda: (kth, cut), lambda: _exact(_keys(flat), k))
    adapted = tf.clip_by_value(spacing * _TARGET // tf.maximum(entries, 1), spacing // 2, spacing * 2)
    spacing = tf.where(found, adapted, tf.where(too_full, spacing // 2, tf.where(lost, spacing * 2, spacing)))
    spacing = tf.clip_by_value(spacing, 4, _MAX_SPACING)
    keep = tf.reshape(_keep(_keys(flat), kth, cut), tf.shape(values))
    scale = product(factors, values)
    return tf.where(keep, scale, tf.zeros_like(scale)), scale * tf.sign(values), tf.stack([kth, spacing])


def _exact(keys, k):
    """The k-th key and the last index kept among the keys equal to it, by the two-pass select."""
    k = tf.cast(k, tf.float64)
    n = tf.size(keys)
    kth, above, at_or_above = _kth_largest(keys, k)

    def lowest_tied_indices():
        order = tf.where(tf.equal(keys, kth), n - tf.range(n), 0)  # distinct, larger for lower indices
        return n - _kth_largest(order, k - above)[0]

    return kth, tf.cond(tf.equal(at_or_above, k), lambda: n - 1, lowest_tied_indices)


def _near(keys, k, last, spacing):
    """The k-th key from thresholds around the ``last`` k-th (``found`` false: look again).

    Also returns how many keys the k-th's interval held, whether it held too
    many to gather and whether the k-th moved past the outer thresholds,
    which steer the next spacing; and the last index kept among keys tied
    at the k-th. Ties that split are ranked here: the two-pass select would
    run twice (the k-th, then the indices), and they split at ~1.7% of the
    steps of LeNet's first layer (float32 scores share values).
    """
    n = keys.shape[0]
    rows = -(-n // _ROW)
    steps = tf.constant([-3, -1, 1, 3], tf.int64) * tf.cast(spacing // 2, tf.int64)
    thresholds = tf.cast(tf.clip_by_value(tf.cast(last, tf.int64) + steps, 0, _SIGN_OFF), tf.int32)
    packed = tf.add_n([tf.cast(keys >= thresholds[j], tf.float32) * float(_BASE ** j) for j in range(_THRESHOLDS)])
    packed = tf.reshape(tf.pad(packed, [[0, rows * _ROW - n]]), [rows, _ROW])  # padding the keys is slower
    row_sums = tf.cast(tf.linalg.matvec(packed, tf.ones([_ROW])), tf.int32)
    at_least = tf.stack([row_sums // _BASE ** j % _BASE for j in range(_THRESHOLDS)])  # [threshold, row]
    totals = tf.reduce_sum(at_least, 1)
    j = tf.reduce_sum(tf.cast(totals >= k, tf.int32)) - 1  # k-th in [thresholds[j], thresholds[j + 1])
    bracketed = (last >= 0) & (j >= 0) & (j < _THRESHOLDS - 1)
    j = tf.clip_by_value(j, 0, _THRESHOLDS - 2)
    low, high = tf.gather(thresholds, j), tf.gather(thresholds, j + 1)
    above = tf.gather(totals, j + 1)
    entries = tf.gather(totals, j) - above
    # Gather the groups of _GROUP rows that hold the interval's keys, compacted by prefix sums.
    in_rows = tf.gather(at_least, j) - tf.gather(at_least, j + 1)
    groups = -(-rows // _GROUP)
    has = tf.cast(tf.reduce_sum(tf.reshape(tf.pad(in_rows, [[0, groups * _GROUP - rows]]), [groups, _GROUP]), 1) > 0,
                  tf.float32)
    slot = tf.cast(_prefix_sums(has), tf.int32) - 1
    n_groups = tf.reduce_sum(tf.cast(has, tf.int32))
    kept = min(groups, _GROUPS_KEPT)
    slot = tf.where((has > 0) & (slot < kept), slot, -1)
    group_ids = tf.math.unsorted_segment_max(tf.range(groups), slot, kept)
    row_ids = tf.reshape(group_ids[:, None] * _GROUP + tf.range(_GROUP), [-1])
    index = row_ids[:, None] * _ROW + tf.range(_ROW)  # [gathered rows, _ROW]
    valid = (tf.repeat(tf.range(kept) < n_groups, _GROUP)[:, None]) & (index < n)
    picked = tf.gather(keys, tf.where(valid, index, 0))
    inside = valid & (picked >= low) & (picked < high)
    kth, at_least_kth, above_kth = _kth_of_few(tf.where(inside, picked, -1), k - above)
    too_full = bracketed & ((n_groups > kept) | (entries > _FEW))
    found = bracketed & ~too_full & (above + above_kth < k) & (k <= above + at_least_kth)
    # Keys tied at the k-th that do not all fit (rare): keep the lowest indices, ranked among the gathered.
    split = found & (k < above + at_least_kth)
    def lowest_tied_indices():
        order = tf.where(inside & tf.equal(picked, kth), n - index, -1)  # distinct, larger for lower indices
        return n - _kth_of_few(order, k - above - above_kth)[0]

    cut = tf.cond(split, lowest_tied_indices, lambda: n - 1)
    return kth, found, entries, too_full, (last >= 0) & ~bracketed, cut


def _prefix_sums(flags, block=32):
    """Inclusive prefix sums of a short float32 vector of small counts, by triangular products."""
    m = flags.shape[0]
    blocks = -(-m // block)
    x = tf.reshape(tf.pad(flags, [[0, blocks * block - m]]), [blocks, block])
    offsets = tf.linalg.matvec(_triangle(blocks, strict=True), tf.reduce_sum(x, 1), transpose_a=True)
    return tf.reshape(tf.matmul(x, _triangle(block)) + offsets[:, None], [-1])[:m]


def _kth_of_few(picked, k):
    """The k-th largest of the (at most _FEW) non-negative entries of ``picked`` [rows, _ROW], and how many
    are >= it and > it.

    The entries are compacted in order by prefix sums, then ranked against each other.
    """
    flags = tf.cast(picked >= 0, tf.float32)
    within = tf.matmul(flags, _triangle(_ROW))  # inclusive prefix sums along each row
    row_totals = within[:, -1]
    slot = tf.cast(within + (_prefix_sums(row_totals) - row_totals)[:, None], tf.int32) - 1
    slot = tf.where((flags > 0) & (slot < _FEW), slot, -1)
    few = tf.math.unsorted_segment_max(picked, slot, _FEW)
    few = tf.where(tf.range(_FEW) < tf.cast(tf.reduce_sum(row_totals), tf.int32), few, -1)
    at_least = tf.reduce_sum(tf.cast(few[None, :] >= few[:, None], tf.int32), 1)  # entries >= each entry
    kth = tf.reduce_max(tf.where((few >= 0) & (at_least >= k), few, -1))
    return kth, tf.reduce_sum(tf.cast(few >= kth, tf.int32)), tf.reduce_sum(tf.cast(few > kth, tf.int32))


def _kth_largest(keys, k):
    """k-th largest of int32 keys in [0, 2^31), with the counts of keys above it and at or above it."""
    high = tf.bitwise.right_shift(keys, _LOW_BITS)
    hist = tf.math.unsorted_segment_sum(tf.ones_like(keys), high, 1 << (31 - _LOW_BITS))
    band, above, _ = _select_bin(hist, k, 256, 256)
    return _in_band(band, above, _band_histogram(keys, high, band), k)


def _band_histogram(keys, high, band):
    """Counts of the low bits of the keys whose top bits are ``band``.

    The other keys get a negative bin, which the scatter drops: cheaper
    under XLA than adding zeros for them.
    """
    bins = tf.where(tf.equal(high, band), tf.bitwise.bitwise_and(keys, _LOW), -1)
    return tf.math.unsorted_segment_sum(tf.ones_like(keys), bins, _LOW + 1)


def _in_band(band, above, hist, k):
    """The k-th key from the histogram of the low bits of the keys in ``band``, ``above`` keys being above it."""
    low, above_low, at_or_above_low = _select_bin(hist, k - above, 256, 128)
    kth = tf.bitwise.bitwise_or(tf.bitwise.left_shift(band, _LOW_BITS), low)
    return kth, above + above_low, above + at_or_above_low


def _select_bin(hist, k, rows, cols):
    """The bin holding the k-th largest, by suffix sums over rows then within one row.

    Returns the bin and the counts in the bins above it and at or above it.
    """
    hist = tf.reshape(tf.cast(hist, tf.float64), [rows, cols])
    totals = tf.reduce_sum(hist, axis=1)
    row_suffix = tf.linalg.matvec(_triangle(rows, dtype=np.float64), totals)
    row = tf.reduce_sum(tf.cast(row_suffix >= k, tf.int32)) - 1
    counts = tf.gather(hist, row)
    suffix = tf.gather(row_suffix - totals, row) + tf.linalg.matvec(_triangle(cols, dtype=np.float64), counts)
    col = tf.reduce_sum(tf.cast(suffix >= k, tf.int32)) - 1
    at_or_above = tf.gather(suffix, col)
    return row * cols + col, at_or_above - tf.gather(counts, col), at_or_above
