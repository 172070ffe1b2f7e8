"""Exact top-k 0/1 masks without sorting: the per-step selection of edge-popup supermasks.

``tf.math.top_k`` sorts, which costs ~18 ms for LeNet's 235K-weight layer on
a CPU (~40 ms under XLA): ten times a whole training step. The k-th largest
magnitude is found instead from the bit patterns of ``|x|``, which order like
the values: a radix select of two histogram passes (the top 16 bits, then the
low 15 bits inside the one bucket that holds the k-th value), compiled with
XLA whether or not the caller is: 1.2-1.5 ms for that layer. The histograms also
count the entries tied with the k-th value; when not all of them fit, the
lowest indices are kept, as a stable sort would, found by the same select
over the tied entries' indices. The result equals the sort-based mask.
"""
import numpy as np

from lt_keras._keras import tf

_SIGN_OFF = 0x7FFFFFFF
_LOW_BITS = 15
# Suffix sums as products with triangular matrices: XLA's CPU cumsum chains compile for minutes.
_SUFFIX_SUMS = {m: np.triu(np.ones((m, m), np.float64)) for m in (128, 256)}


def top_k_mask(values, k: int):
    """0/1 tensor shaped like ``values`` with ones at its ``k`` largest magnitudes."""
    n = int(np.prod(values.shape))
    if not 1 <= k <= n:
        raise ValueError(f"top_k_mask: k must be in [1, {n}], got {k}.")
    keep = _top_k_keep(tf.reshape(tf.cast(values, tf.float32), [-1]), tf.constant(k, tf.float64))
    return tf.reshape(tf.cast(keep, values.dtype), tf.shape(values))


@tf.function(jit_compile=True)
def _top_k_keep(flat, k):
    keys = tf.bitwise.bitwise_and(tf.bitcast(flat, tf.int32), _SIGN_OFF)  # |x|, ordered as integers
    kth, above, at_or_above = _kth_largest(keys, k)

    def keep_lowest_tied_indices():
        n = tf.shape(keys)[0]
        tied = tf.equal(keys, kth)
        order = tf.where(tied, n - tf.range(n), 0)  # distinct, larger for lower indices
        last, _, _ = _kth_largest(order, k - above)
        return tf.logical_or(keys > kth, tf.logical_and(tied, order >= last))

    return tf.cond(tf.equal(at_or_above, k), lambda: keys >= kth, keep_lowest_tied_indices)


def _kth_largest(keys, k):
    """k-th largest of int32 keys in [0, 2^31), with the counts of keys above it and at or above it."""
    high = tf.bitwise.right_shift(keys, _LOW_BITS)
    hist = tf.math.unsorted_segment_sum(tf.ones_like(keys), high, 1 << (31 - _LOW_BITS))
    high_kth, above_high, _ = _select_bin(hist, k, 256, 256)
    inside = tf.cast(tf.equal(high, high_kth), tf.int32)
    hist = tf.math.unsorted_segment_sum(inside, tf.bitwise.bitwise_and(keys, (1 << _LOW_BITS) - 1), 1 << _LOW_BITS)
    low_kth, above_low, at_or_above_low = _select_bin(hist, k - above_high, 256, 128)
    kth = tf.bitwise.bitwise_or(tf.bitwise.left_shift(high_kth, _LOW_BITS), low_kth)
    return kth, above_high + above_low, above_high + at_or_above_low


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
