"""The radix-select top-k mask equals the sort-based one, keeps exactly k, and handles ties, in every mode."""
import numpy as np
import pytest

from lt_keras._keras import tf
from lt_keras.topk import top_k_mask


def sorted_mask(values, k):
    flat = values.reshape(-1)
    mask = np.zeros(flat.size, np.float32)
    mask[np.argsort(-flat, kind="stable")[:k]] = 1
    return mask.reshape(values.shape)


MODES = {"eager": lambda f: f, "graph": lambda f: tf.function(f), "xla": lambda f: tf.function(f, jit_compile=True)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", [(784, 300), (3, 3, 16, 32), (7,)])
@pytest.mark.parametrize("fraction", [0.05, 0.5, 1.0])
def test_matches_sorting(mode, shape, fraction):
    rng = np.random.default_rng(sum(shape))
    values = np.abs(rng.standard_normal(shape)).astype(np.float32) * 10.0 ** rng.integers(-6, 3, shape)
    k = max(1, round(fraction * values.size))
    mask = MODES[mode](lambda v: top_k_mask(v, k))(tf.constant(values)).numpy()
    assert mask.shape == values.shape and mask.sum() == k
    np.testing.assert_array_equal(mask, sorted_mask(values, k))


@pytest.mark.parametrize("mode", list(MODES))
def test_ties_keep_exactly_k(mode):
    values = np.round(np.abs(np.random.default_rng(0).standard_normal((300, 100))), 1).astype(np.float32)
    for k in (1, 777, 15000, 29999):
        mask = MODES[mode](lambda v: top_k_mask(v, k))(tf.constant(values)).numpy()
        assert mask.sum() == k
        assert values[mask == 1].min() >= values[mask == 0].max()
    constant = MODES[mode](lambda v: top_k_mask(v, 10))(tf.zeros((4, 5))).numpy()
    assert constant.sum() == 10


def test_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        top_k_mask(tf.ones((3, 3)), 10)
