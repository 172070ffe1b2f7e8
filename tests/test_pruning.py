"""Criteria, count arithmetic and mask-1 actions on hand-made arrays with exact answers."""
import numpy as np
import pytest

from lt_keras import LtKerasError, Mask
from lt_keras.actions import apply_mask1
from lt_keras.criteria import criterion_names, score
from lt_keras.pruning import prune_count, prune_global, prune_layerwise, random_mask_like

W_INIT = np.array([0.5, -0.2, 0.1, -0.9, 0.3, 0.05])
W_FINAL = np.array([0.6, 0.4, -0.05, -0.1, 0.2, 0.7])

# Keep 3 of 6 under each criterion (pruning rate 0.5 from a full mask).
EXPECTED_KEEP = {
    "large_final": [1, 1, 0, 0, 0, 1],  # |wf| = .6 .4 .05 .1 .2 .7
    "small_final": [0, 0, 1, 1, 1, 0],
    "large_init": [1, 0, 0, 1, 1, 0],  # |wi| = .5 .2 .1 .9 .3 .05
    "small_init": [0, 1, 1, 0, 0, 1],
    "large_init_large_final": [1, 1, 0, 0, 1, 0],  # min = .5 .2 .05 .1 .2 .05: ties at .05 fall by index
    "small_init_small_final": [0, 1, 1, 0, 1, 0],  # -max = -.6 -.4 -.1 -.9 -.3 -.7
    "magnitude_increase": [1, 1, 0, 0, 0, 1],  # .1 .2 -.05 -.8 -.1 .65
    "movement": [0, 1, 0, 1, 0, 1],  # .1 .6 .15 .8 .1 .65
    "large_final_same_sign": [1, 0, 0, 0, 1, 1],  # same sign at idx 0, 3, 4, 5; |wf| .6 .1 .2 .7
    "large_final_diff_sign": [0, 1, 1, 1, 0, 0],  # flipped at idx 1, 2; then the smallest same-sign |wf| (idx 3)
}


@pytest.mark.parametrize("criterion", sorted(EXPECTED_KEEP))
def test_criteria_exact_masks(criterion):
    full = Mask({"w": np.ones(6)})
    mask = prune_layerwise({"w": score(criterion, W_INIT, W_FINAL)}, full, {"w": 0.5})
    np.testing.assert_array_equal(mask["w"], EXPECTED_KEEP[criterion])


def test_every_criterion_is_covered_and_random_is_seeded():
    assert set(criterion_names()) == set(EXPECTED_KEEP) | {"random"}
    a = score("random", W_INIT, W_FINAL, np.random.RandomState(1))
    b = score("random", W_INIT, W_FINAL, np.random.RandomState(1))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(LtKerasError, match="unknown criterion 'big'"):
        score("big", W_INIT, W_FINAL)


def test_prune_count_rounds_half_up():
    assert [prune_count(0.2, n) for n in (10, 12, 13, 266_200)] == [2, 2, 3, 53_240]
    assert prune_count(0.1, 5) == 1  # 0.5 rounds up


def test_layerwise_exact_counts_over_rounds_and_pruned_stay_pruned():
    rng = np.random.RandomState(0)
    shapes = {"fc1/kernel": (784, 300), "fc2/kernel": (300, 100), "output/kernel": (100, 10)}
    rates = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1}
    mask = Mask({k: np.ones(s) for k, s in shapes.items()})
    for _ in range(3):
        before = mask
        scores = {k: rng.randn(*s) for k, s in shapes.items()}
        mask = prune_layerwise(scores, mask, rates)
        for k in shapes:
            kept_before = int(before[k].sum())
            assert int(mask[k].sum()) == kept_before - prune_count(rates[k], kept_before)
            assert np.all(mask[k] <= before[k])  # never revived
    assert mask.counts()["fc1/kernel"] == (120_422, 235_200)  # 235200 * 0.8^3 with rounding per round


def test_ties_are_broken_by_index():
    mask = prune_layerwise({"w": np.zeros(5)}, Mask({"w": np.ones(5)}), {"w": 0.4})
    np.testing.assert_array_equal(mask["w"], [0, 0, 1, 1, 1])


def test_global_allocation_pools_layers():
    mask = Mask({"a": np.ones(4), "b": np.ones(4)})
    scores = {"a": np.array([1.0, 2, 3, 4]), "b": np.array([0.5, 10, 11, 12])}
    out = prune_global(scores, mask, 0.5)
    np.testing.assert_array_equal(out["a"], [0, 0, 0, 1])
    np.testing.assert_array_equal(out["b"], [0, 1, 1, 1])


def test_rate_and_shape_errors():
    mask = Mask({"w": np.ones(3)})
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(LtKerasError, match=r"must be in \(0, 1\)"):
            prune_layerwise({"w": np.ones(3)}, mask, {"w": rate})
    with pytest.raises(LtKerasError, match="have shape"):
        prune_layerwise({"w": np.ones(4)}, mask, {"w": 0.5})
    with pytest.raises(LtKerasError, match="no scores"):
        prune_global({}, mask, 0.5)


def test_random_mask_keeps_per_layer_counts():
    mask = Mask({"a": np.array([1, 0, 1, 0, 1, 1]), "b": np.eye(3)})
    rand = random_mask_like(mask, np.random.RandomState(0))
    assert rand.counts() == mask.counts()


MASK = np.array([1, 0, 1, 1, 0, 1], np.float32)


def test_mask1_init_and_reinit():
    np.testing.assert_array_equal(apply_mask1("init", W_INIT, MASK), (W_INIT * MASK).astype(np.float32))
    fresh = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(apply_mask1("reinit", W_INIT, MASK, fresh=fresh), fresh * MASK)
    with pytest.raises(LtKerasError, match="fresh draw"):
        apply_mask1("reinit", W_INIT, MASK)


def test_mask1_reshuffle_permutes_kept_values():
    out = apply_mask1("reshuffle", W_INIT, MASK, np.random.RandomState(3))
    assert np.all(out[MASK == 0] == 0)
    np.testing.assert_allclose(sorted(out[MASK == 1]), sorted(W_INIT[MASK == 1].astype(np.float32)))


def test_mask1_constants():
    std = np.float32(np.std(W_INIT.astype(np.float32)))
    signed = apply_mask1("signed_constant", W_INIT, MASK)
    np.testing.assert_allclose(signed, np.sign(W_INIT) * std * MASK, rtol=1e-6)
    const = apply_mask1("constant", W_INIT, MASK, np.random.RandomState(0))
    np.testing.assert_allclose(np.abs(const[MASK == 1]), std, rtol=1e-6)
    assert np.all(const[MASK == 0] == 0)
    with pytest.raises(LtKerasError, match="unknown action"):
        apply_mask1("shuffle", W_INIT, MASK)
