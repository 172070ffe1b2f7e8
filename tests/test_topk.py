"""The radix-select top-k mask equals the stable-sort one on |values|, ties included, in every mode."""
import numpy as np
import pytest

from lt_keras._keras import tf
from lt_keras.topk import top_k_mask, top_k_masks


def sorted_mask(values, k):
    flat = np.abs(values.reshape(-1))
    mask = np.zeros(flat.size, np.float32)
    mask[np.argsort(-flat, kind="stable")[:k]] = 1
    return mask.reshape(values.shape)


MODES = {"eager": lambda f: f, "graph": lambda f: tf.function(f), "xla": lambda f: tf.function(f, jit_compile=True)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", [(784, 300), (3, 3, 16, 32), (7,)])
@pytest.mark.parametrize("fraction", [0.05, 0.5, 1.0])
def test_matches_sorting(mode, shape, fraction):
    rng = np.random.default_rng(sum(shape))
    values = rng.standard_normal(shape).astype(np.float32) * 10.0 ** rng.integers(-6, 3, shape)
    k = max(1, round(fraction * values.size))
    mask = MODES[mode](lambda v: top_k_mask(v, k))(tf.constant(values)).numpy()
    assert mask.shape == values.shape and mask.sum() == k
    np.testing.assert_array_equal(mask, sorted_mask(values, k))


@pytest.mark.parametrize("mode", list(MODES))
def test_ties_keep_the_lowest_indices(mode):
    values = np.round(np.random.default_rng(0).standard_normal((300, 100)), 1).astype(np.float32)
    for k in (1, 777, 15000, 29999, 30000):
        mask = MODES[mode](lambda v: top_k_mask(v, k))(tf.constant(values)).numpy()
        assert mask.sum() == k
        np.testing.assert_array_equal(mask, sorted_mask(values, k))
    for k in (1, 10, 20):  # all tied, including +0 and -0
        values = np.where(np.arange(20) % 2, 0.0, -0.0).astype(np.float32).reshape(4, 5)
        mask = MODES[mode](lambda v: top_k_mask(v, k))(tf.constant(values)).numpy()
        np.testing.assert_array_equal(mask.reshape(-1), np.arange(20) < k)


def test_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        top_k_mask(tf.ones((3, 3)), 10)
    with pytest.raises(ValueError, match="k must be in"):
        top_k_masks(tf.ones((3, 3)), 0)


@pytest.mark.parametrize("mode", list(MODES))
def test_within_and_the_straight_through_slope(mode):
    """The fixed mask ``within`` multiplies the top-k mask (k counts over all entries), and the slope is
    within * sign(values), d|x|/dx of edge-popup, computed in the same pass."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((40, 30)).astype(np.float32)
    within = (rng.random(values.shape) < 0.7).astype(np.float32)
    mask, slope = MODES[mode](lambda v, w: top_k_masks(v, 300, w))(tf.constant(values), tf.constant(within))
    np.testing.assert_array_equal(mask.numpy(), within * sorted_mask(values, 300))
    np.testing.assert_array_equal(slope.numpy(), within * np.sign(values))
    mask, slope = top_k_masks(tf.constant(values), 300)
    np.testing.assert_array_equal(mask.numpy(), sorted_mask(values, 300))
    np.testing.assert_array_equal(slope.numpy(), np.sign(values))
