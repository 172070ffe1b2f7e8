"""Exact top-k 0/1 masks without sorting: the per-step selection of edge-popup supermasks.

``tf.math.top_k`` sorts, which costs ~18 ms for LeNet's 235K-weight layer on
a CPU (~40 ms under XLA): ten times a whole training step. The k-th largest
magnitude is found instead from the bit patterns of ``|x|``, which order like
the values, compiled with XLA whether or not the caller is.

A radix select of two histogram passes: the top 16 bits, then the low 15
bits inside the one band of the top bits that holds the k-th value. Tied
entries that do not all fit are kept by lowest index, as a stable sort would:
the mask is ``|x| > kth or (|x| == kth and index <= cut)``.

Every call selects from scratch. A variant that remembered the last k-th and
counted only near it saved ~0.5 ms of LeNet-300-100's edge-popup step on a
2-core CPU for ~100 lines, seven tuning constants and a state variable
outside Keras tracking; it was removed (the bench's ``topk`` rows give the
step ratio without it).
"""
import numpy as np

from lt_keras._keras import tf
from lt_keras.straight_through import product

_SIGN_OFF = 0x7FFFFFFF
_LOW_BITS = 15
_LOW = (1 << _LOW_BITS) - 1


def _triangle(m, dtype=np.float32):
    """Upper-triangular ones: suffix sums as products (XLA's CPU cumsum is quadratic)."""
    return tf.constant(np.triu(np.ones((m, m), dtype)))


def top_k_masks(values, k: int, *factors):
    """The top-k 0/1 mask of |values| and edge-popup's straight-through slope sign(values) (d|x|/dx),
    both times ``factors`` (a fixed mask, the kernel), from one compiled pass."""
    _check_k(values, k)
    # A tensor, never a variable: TF 2.21 reused a trace made with one model's mirrored variable for the next
    # model's, which then trained with, and kept, the first model's mask (tests/test_distribute.py).
    values = tf.convert_to_tensor(values)
    return _masks_and_slope(values, tf.constant(k, tf.int32), [tf.cast(f, values.dtype) for f in factors])


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
def _masks_and_slope(values, k, factors):
    keys = _keys(tf.reshape(tf.cast(values, tf.float32), [-1]))
    keep = tf.reshape(_keep(keys, *_exact(keys, k)), tf.shape(values))
    scale = product(factors, values)
    return tf.where(keep, scale, tf.zeros_like(scale)), scale * tf.sign(values)


def _exact(keys, k):
    """The k-th key and the last index kept among the keys equal to it, by the two-pass select."""
    k = tf.cast(k, tf.float64)
    n = tf.size(keys)
    kth, above, at_or_above = _kth_largest(keys, k)

    def lowest_tied_indices():
        order = tf.where(tf.equal(keys, kth), n - tf.range(n), 0)  # distinct, larger for lower indices
        return n - _kth_largest(order, k - above)[0]

    return kth, tf.cond(tf.equal(at_or_above, k), lambda: n - 1, lowest_tied_indices)


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
