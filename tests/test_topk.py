"""The radix-select top-k mask equals the stable-sort one on |values|, ties included, in every mode."""
import numpy as np
import pytest

from lt_keras._keras import tf
from lt_keras import topk
from lt_keras.topk import TopKMasks, top_k_mask


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


@pytest.mark.parametrize("mode", list(MODES))
def test_remembered_kth_only_saves_work(mode):
    """Whatever the last k-th value was (none, near, far off, tied), the mask is the sorted one."""
    rng = np.random.default_rng(1)
    masks = TopKMasks()
    select = MODES[mode](lambda v: masks(v, 1000)[0])
    values = rng.standard_normal((100, 50)).astype(np.float32)
    for step in range(6):
        # small steps keep the k-th near the last one; step 3 jumps far away; step 4 has ties
        values = values * (100.0 if step == 3 else 1.0) + 1e-6 * rng.standard_normal(values.shape).astype(np.float32)
        if step == 4:
            values = np.round(values, 0)
        mask = select(tf.constant(values)).numpy()
        np.testing.assert_array_equal(mask, sorted_mask(values, 1000))
        kth = np.sort(np.abs(values).reshape(-1))[-1000]
        assert masks._state.numpy()[0] == np.float32(kth).view(np.int32)


@pytest.mark.parametrize("mode", list(MODES))
def test_ties_at_the_kth_are_ranked_near_the_last_kth(mode):
    """Entries tied at the k-th that do not all fit are kept by lowest index without the two-pass select:
    ``_near`` finds the k-th and the last index kept, and the mask equals the stable-sort one."""
    rng = np.random.default_rng(4)
    values = rng.uniform(-1, 1, (200, 50)).astype(np.float32)
    tied = rng.choice(values.size, 6, replace=False)
    values.reshape(-1)[tied] = 0.5 * np.sign(values.reshape(-1)[tied])  # six entries of |x| = 0.5
    k = int(np.sum(np.abs(values) > 0.5)) + 3  # three of the six fit
    masks = TopKMasks()
    select = MODES[mode](lambda v: masks(v, k)[0])
    for _ in range(2):  # from scratch, then near the remembered k-th
        state = masks._state.numpy()
        np.testing.assert_array_equal(select(tf.constant(values)).numpy(), sorted_mask(values, k))
    kth, found, *_, cut = topk._near(topk._keys(tf.reshape(tf.constant(values), [-1])), tf.constant(k),
                                     tf.constant(state[0]), tf.constant(state[1]))
    assert bool(found) and int(kth) == np.float32(0.5).view(np.int32)
    assert int(cut) == np.sort(tied)[2]


@pytest.mark.parametrize("shape, k, step", [((300, 200), 30000, 1e-3), ((300, 200), 600, 1e-3), ((30, 10), 150, 1e-2),
                                            ((7,), 3, 1e-1)])
def test_follows_a_training_like_walk_exactly(shape, k, step):
    """Each entry moves by +-step every call, as under Adam: the thresholds around the last k-th
    find the new one at most calls, and the mask always equals the sorted one."""
    rng = np.random.default_rng(2)
    masks = TopKMasks()
    select = tf.function(lambda v: masks(v, k)[0])
    near = tf.function(lambda v, state: topk._near(topk._keys(tf.reshape(v, [-1])), tf.constant(k), state[0],
                                                   state[1])[1], jit_compile=True)
    values = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    found = []
    for _ in range(40):
        values += step * np.sign(rng.standard_normal(shape)).astype(np.float32)
        found.append(bool(near(tf.constant(values), tf.constant(masks._state.numpy()))))
        np.testing.assert_array_equal(select(tf.constant(values)).numpy(), sorted_mask(values, k))
    assert np.mean(found) > 0.6, found


@pytest.mark.parametrize("mode", list(MODES))
def test_within_and_the_straight_through_slope(mode):
    """The fixed mask ``within`` multiplies the top-k mask (k counts over all entries), and the slope is
    within * sign(values), d|x|/dx of edge-popup, computed in the same pass."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((40, 30)).astype(np.float32)
    within = (rng.random(values.shape) < 0.7).astype(np.float32)
    masks = TopKMasks()
    mask, slope = MODES[mode](lambda v, w: masks(v, 300, w))(tf.constant(values), tf.constant(within))
    np.testing.assert_array_equal(mask.numpy(), within * sorted_mask(values, 300))
    np.testing.assert_array_equal(slope.numpy(), within * np.sign(values))
    mask, slope = TopKMasks()(tf.constant(values), 300)
    np.testing.assert_array_equal(mask.numpy(), sorted_mask(values, 300))
    np.testing.assert_array_equal(slope.numpy(), np.sign(values))
