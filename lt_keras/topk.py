"""Exact top-k 0/1 masks without sorting: the per-step selection of edge-popup supermasks.

``tf.math.top_k`` sorts, which costs ~18 ms for LeNet's 235K-weight layer on
a CPU (~40 ms under XLA): ten times a whole training step. The k-th largest
magnitude is found instead from the bit patterns of ``|x|``, which order like
the values: a radix select of two histogram passes (the top 16 bits, then the
low 15 bits inside the one band of the top bits that holds the k-th value),
compiled with XLA whether or not the caller is. ``TopKMasks`` remembers the
last k-th value of a tensor that changes step to step: while the next one
stays in the same band, which it does at almost every training step, one
pass finds it. The histograms also count the entries tied with the k-th
value; when not all of them fit, the lowest indices are kept, as a stable
sort would, found by the same select over the tied entries' indices. The
result equals the sort-based mask whatever was remembered.
"""
import numpy as np

from lt_keras._keras import tf

_SIGN_OFF = 0x7FFFFFFF
_LOW_BITS = 15
_LOW = (1 << _LOW_BITS) - 1
# Suffix sums as products with triangular matrices: XLA's CPU cumsum chains compile for minutes.
_SUFFIX_SUMS = {m: np.triu(np.ones((m, m), np.float64)) for m in (128, 256)}


class TopKMasks:
    """Top-k masks of one tensor as it changes, remembering its last k-th largest magnitude.

    A plain object, not a Keras weight: what it remembers only saves work and
    is never saved with a model.
    """

    def __init__(self):
        with tf.init_scope():
            self._last = tf.Variable(-1, dtype=tf.int32, trainable=False, name="last_kth",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def __call__(self, values, k: int):
        mask, kth = _top_k_mask(values, k, self._last)
        self._last.assign(kth)
        return mask


def top_k_mask(values, k: int):
    """0/1 tensor shaped like ``values`` with ones at its ``k`` largest magnitudes."""
    return _top_k_mask(values, k)[0]


def _top_k_mask(values, k, last_kth=None):
    n = int(np.prod(values.shape))
    if not 1 <= k <= n:
        raise ValueError(f"top_k_mask: k must be in [1, {n}], got {k}.")
    keep, kth = _top_k_keep(tf.reshape(tf.cast(values, tf.float32), [-1]), tf.constant(k, tf.float64), last_kth)
    return tf.reshape(tf.cast(keep, values.dtype), tf.shape(values)), kth


@tf.function(jit_compile=True)
def _top_k_keep(flat, k, last_kth):
    keys = tf.bitwise.bitwise_and(tf.bitcast(flat, tf.int32), _SIGN_OFF)  # |x|, ordered as integers
    kth, above, at_or_above = _kth_largest(keys, k, last_kth)

    def keep_lowest_tied_indices():
        n = tf.shape(keys)[0]
        tied = tf.equal(keys, kth)
        order = tf.where(tied, n - tf.range(n), 0)  # distinct, larger for lower indices
        last, _, _ = _kth_largest(order, k - above)
        return tf.logical_or(keys > kth, tf.logical_and(tied, order >= last))

    return tf.cond(tf.equal(at_or_above, k), lambda: keys >= kth, keep_lowest_tied_indices), kth


def _kth_largest(keys, k, last_kth=None):
    """k-th largest of int32 keys in [0, 2^31), with the counts of keys above it and at or above it.

    With ``last_kth`` (< 0: none), one pass first counts the keys above its
    band of the top bits and the low bits of those in the band; two passes
    find the band when the k-th is not in it.
    """
    high = tf.bitwise.right_shift(keys, _LOW_BITS)
    if last_kth is not None:
        band = tf.bitwise.right_shift(last_kth, _LOW_BITS)
        hist = _band_histogram(keys, high, band)
        above = tf.cast(_count(high > band), tf.float64)
        in_band = tf.logical_and(above < k, k <= above + tf.cast(tf.reduce_sum(hist), tf.float64))
        return tf.cond(in_band, lambda: _in_band(band, above, hist, k), lambda: _kth_largest(keys, k))
    hist = tf.math.unsorted_segment_sum(tf.ones_like(keys), high, 1 << (31 - _LOW_BITS))
    band, above, _ = _select_bin(hist, k, 256, 256)
    return _in_band(band, above, _band_histogram(keys, high, band), k)


def _count(flags):
    """Number of true entries, as products with ones: XLA's CPU dot is ~2x faster than its reduce_sum."""
    flags = tf.cast(flags, tf.float32)
    whole = flags.shape[0] // 256 * 256
    rows = tf.linalg.matvec(tf.reshape(flags[:whole], [-1, 256]), tf.ones([256]))  # exact: each <= 256
    return tf.reduce_sum(tf.cast(rows, tf.int32)) + tf.reduce_sum(tf.cast(flags[whole:], tf.int32))


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
    row_suffix = tf.linalg.matvec(tf.constant(_SUFFIX_SUMS[rows]), totals)
    row = tf.reduce_sum(tf.cast(row_suffix >= k, tf.int32)) - 1
    counts = tf.gather(hist, row)
    suffix = tf.gather(row_suffix - totals, row) + tf.linalg.matvec(tf.constant(_SUFFIX_SUMS[cols]), counts)
    col = tf.reduce_sum(tf.cast(suffix >= k, tf.int32)) - 1
    at_or_above = tf.gather(suffix, col)
    return row * cols + col, at_or_above - tf.gather(counts, col), at_or_above
