"""Criteria, count arithmetic and mask-1 actions on hand-made arrays with exact answers."""
import numpy as np
import pytest

from lt_keras import LtKerasError, Mask
from lt_keras.actions import apply_mask0, apply_mask1, kept_start
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
    # Both ranks at least the same percentile: ranks of |wi| 4 2 1 5 3 0, of |wf| 4 3 0 1 2 5; min 4 2 0 1 2 0.
    "large_init_large_final": [1, 1, 0, 0, 1, 0],
    "small_init_small_final": [0, 1, 1, 0, 1, 0],  # ranks of -|wi| 1 3 4 0 2 5, of -|wf| 1 2 5 4 3 0
    "magnitude_increase": [1, 1, 0, 0, 0, 1],  # .1 .2 -.05 -.8 -.1 .65
    "movement": [0, 1, 0, 1, 0, 1],  # .1 .6 .15 .8 .1 .65
    # As the authors' code, the excluded group scores 0 (ties here by index: no rng).
    "large_final_same_sign": [1, 0, 0, 0, 1, 1],  # scores .6 0 0 .1 .2 .7 (flipped at idx 1, 2)
    "large_final_diff_sign": [0, 1, 1, 0, 0, 1],  # scores 0 .4 .05 0 0 0: the 0s at idx 0, 3, 4 go
    # As the authors' code: flipped weights score 0, the others |wf| - |wi| = .1 . . -.8 -.1 .65;
    # scores .1 0 0 -.8 -.1 .65 -> prune -.8, -.1 and the first 0 (idx 1).
    "magnitude_increase_same_sign": [1, 0, 1, 0, 0, 1],
    # Only the flipped score their increase: 0 .2 -.05 0 0 0 -> prune -.05, then the 0s at idx 0 and 3.
    "magnitude_increase_diff_sign": [0, 1, 0, 0, 1, 1],
}


@pytest.mark.parametrize("criterion", sorted(EXPECTED_KEEP))
def test_criteria_exact_masks(criterion):
    full = Mask({"w": np.ones(6)})
    mask = prune_layerwise({"w": score(criterion, W_INIT, W_FINAL)}, full, {"w": 0.5})
    np.testing.assert_array_equal(mask["w"], EXPECTED_KEEP[criterion])


def test_quadrant_criteria_rank_each_distribution_as_the_authors_code():
    """large_init_large_final keeps the weights whose |w_init| and |w_final| both clear the same percentile of
    their own distribution (authors' get_weight_init.py): rescaling one changes nothing, where one absolute
    threshold on min(|w_init|, |w_final|) would select by the smaller scale alone, i.e. as large_init."""
    full = Mask({"w": np.ones(6)})
    for criterion in ("large_init_large_final", "small_init_small_final"):
        scaled = prune_layerwise({"w": score(criterion, 0.01 * W_INIT, W_FINAL)}, full, {"w": 0.5})
        np.testing.assert_array_equal(scaled["w"], EXPECTED_KEEP[criterion])
    # Only the kept weights are ranked (ranks / 4 among idx 0, 1, 2, 4); pruned ones score below them all.
    kept = np.array([1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(score("large_init_large_final", W_INIT, W_FINAL, kept=kept),
                                  [0.75, 0.25, 0.0, -1.0, 0.25, -1.0])


def test_every_criterion_is_covered_and_random_is_seeded():
    assert set(criterion_names()) == set(EXPECTED_KEEP) | {"random"}
    a = score("random", W_INIT, W_FINAL, np.random.RandomState(1))
    b = score("random", W_INIT, W_FINAL, np.random.RandomState(1))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(LtKerasError, match="unknown criterion 'big'"):
        score("big", W_INIT, W_FINAL)


def test_prune_count_rules():
    assert [prune_count(0.2, n) for n in (10, 12, 13, 266_200)] == [2, 2, 3, 53_240]  # round (half up)
    assert prune_count(0.1, 5) == 1  # 0.5 rounds up
    assert [prune_count(0.2, n, "floor") for n in (10, 12, 13, 14)] == [2, 2, 2, 2]
    assert [prune_count(0.2, n, "ceil") for n in (10, 12, 13, 14)] == [2, 3, 3, 3]
    with pytest.raises(LtKerasError, match="'nearest' is not one of"):
        prune_count(0.2, 10, "nearest")


def _authors_prune_count(remaining, percentile):
    """Zhou et al.'s get_weight_init.py: ``np.int(np.sum(cur_mask) * percentile / 100)``."""
    return int(remaining * percentile / 100)


@pytest.mark.parametrize("rate", [0.1, 0.15, 0.2, 0.25, 0.5])
def test_floor_count_is_the_authors_count(rate):
    """Same rate value, same count, for every layer size up to 3,000 and LeNet-300-100's."""
    for n in [*range(1, 3001), 235_200, 30_000, 1_000, 188_160, 150_528]:
        assert prune_count(rate, n, "floor") == _authors_prune_count(n, rate * 100), (rate, n)


def _authors_sign_scores(criterion, wi, wf):
    """get_weight_init.py's four sign criteria over the flat weights: the excluded group's scores set to 0."""
    raw_initial, raw_final = wi.ravel(), wf.ravel()
    same = np.sign(raw_initial) == np.sign(raw_final)
    base = np.abs(raw_final) if criterion.startswith("large_final") else np.abs(raw_final) - np.abs(raw_initial)
    excluded = ~same if criterion.endswith("same_sign") else same
    base[np.squeeze(np.where(excluded))] = 0
    return base.reshape(wi.shape)


def _authors_mask(scores, cur_mask, percentile, rs):
    """get_mask_by_layer_by_weight: pruned entries set to 9999, random tie keys over every entry."""
    w = scores.flatten().copy()
    cur = cur_mask.flatten().copy()
    w[cur == 0] = 9999
    prune_num = int(np.sum(cur) * percentile / 100)
    cur[np.lexsort((rs.random(w.size), w))[:prune_num]] = 0
    return cur.reshape(scores.shape)


SIGN_CRITERIA = ("large_final_same_sign", "large_final_diff_sign", "magnitude_increase_same_sign",
                 "magnitude_increase_diff_sign")


@pytest.mark.parametrize("criterion", SIGN_CRITERIA)
@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_sign_criteria_equal_the_authors_code_on_the_same_arrays(criterion, rate):
    """From a full mask, with the same random tie keys (one RandomState, the same draw), the mask is the
    authors' exactly; from a partial mask (their keys cover pruned entries too) the count is theirs and every
    weight outside the tied group is pruned or kept as theirs."""
    rng = np.random.RandomState(0)
    wi, wf = rng.randn(60, 40), rng.randn(60, 40)
    np.testing.assert_array_equal(score(criterion, wi, wf), _authors_sign_scores(criterion, wi, wf))
    full = np.ones(wi.shape)
    ours = prune_layerwise({"w": score(criterion, wi, wf)}, Mask({"w": full}), {"w": rate},
                           rng=np.random.RandomState(7), count_rule="floor")["w"]
    np.testing.assert_array_equal(ours, _authors_mask(_authors_sign_scores(criterion, wi, wf), full, rate * 100,
                                                      np.random.RandomState(7)))
    partial = (rng.rand(*wi.shape) < 0.7).astype(np.float64)
    ours = prune_layerwise({"w": score(criterion, wi, wf)}, Mask({"w": partial}), {"w": rate},
                           rng=np.random.RandomState(1), count_rule="floor")["w"]
    theirs = _authors_mask(_authors_sign_scores(criterion, wi, wf), partial, rate * 100, np.random.RandomState(2))
    assert ours.sum() == theirs.sum()
    tied = (score(criterion, wi, wf) == 0) & (partial > 0)
    np.testing.assert_array_equal(ours[~tied], theirs[~tied])


def test_a_tied_group_is_pruned_at_random_not_by_row():
    """magnitude_increase_diff_sign at 0.2: the same-sign weights all score 0 and the cut falls among them; the
    pruned ones spread over every row (by index, the first rows lost 55% and the last none)."""
    rng = np.random.RandomState(3)
    wi = rng.randn(300, 100)
    wf = wi + 0.3 * rng.randn(300, 100)  # trained: few weights flip sign (~10%)
    mask = prune_layerwise({"w": score("magnitude_increase_diff_sign", wi, wf)}, Mask({"w": np.ones(wi.shape)}),
                           {"w": 0.2}, rng=np.random.RandomState(0), count_rule="floor")["w"]
    same = np.sign(wi) == np.sign(wf)
    first, last = (1 - mask[:100])[same[:100]].mean(), (1 - mask[-100:])[same[-100:]].mean()
    assert 0.02 < first < 0.3 and 0.02 < last < 0.3 and abs(first - last) < 0.05, (first, last)


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


def test_ties_are_broken_by_index_without_rng_and_by_seeded_draws_with_one():
    mask = prune_layerwise({"w": np.zeros(5)}, Mask({"w": np.ones(5)}), {"w": 0.4})
    np.testing.assert_array_equal(mask["w"], [0, 0, 1, 1, 1])
    draws = [prune_layerwise({"w": np.zeros(50)}, Mask({"w": np.ones(50)}), {"w": 0.4},
                             rng=np.random.RandomState(s))["w"] for s in (0, 0, 1)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert draws[0].sum() == 30 and not np.array_equal(draws[0], draws[2])
    assert draws[0][:20].sum() > 0  # not the first 20 by index


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


def test_mask1_signed_reinit_keeps_every_sign_and_the_fresh_magnitudes():
    fresh = np.array([-1.0, 2.0, 3.0, -4.0, 5.0, -6.0], np.float32)
    out = apply_mask1("signed_reinit", W_INIT, MASK, fresh=fresh)
    np.testing.assert_array_equal(out, np.array([1, 0, 3, -4, 0, 6], np.float32))
    with pytest.raises(LtKerasError, match="fresh draw"):
        apply_mask1("signed_reinit", W_INIT, MASK)


def test_mask1_signed_reshuffle_keeps_signs_and_the_multiset_of_kept_magnitudes():
    for seed in range(5):
        out = apply_mask1("signed_reshuffle", W_INIT, MASK, np.random.RandomState(seed))
        kept = MASK == 1
        np.testing.assert_array_equal(np.sign(out[kept]), np.sign(W_INIT[kept]))
        np.testing.assert_allclose(sorted(np.abs(out[kept])), sorted(np.abs(W_INIT[kept]).astype(np.float32)))
        assert np.all(out[~kept] == 0)
    # Some seed moves a magnitude: a permutation, not the identity.
    outs = [apply_mask1("signed_reshuffle", W_INIT, MASK, np.random.RandomState(s)) for s in range(5)]
    assert any(not np.allclose(np.abs(o), np.abs(W_INIT * MASK)) for o in outs)


def test_mask1_rescaling_multiplies_kept_weights_by_numel_over_ones():
    out = apply_mask1("signed_constant", W_INIT, MASK, rescaling=True)
    std = np.float32(np.std(W_INIT.astype(np.float32)))
    np.testing.assert_allclose(out, np.sign(W_INIT) * std * MASK * 6 / 4, rtol=1e-6)


# |w_init| .5 .2 .1 .9 .3 .05 vs |w_final| .6 .4 .05 .1 .2 .7: moved toward zero at idx 2, 3, 4.
PRUNED = MASK == 0  # idx 1 and 4


def test_mask0_freeze_init_zero_mask_zeroes_pruned_weights_that_moved_toward_zero():
    frozen = apply_mask0("freeze_init_zero_mask", W_INIT, W_FINAL, MASK)
    np.testing.assert_allclose(frozen, np.array([0, -0.2, 0, 0, 0, 0], np.float32))  # idx 4 moved toward 0
    np.testing.assert_allclose(apply_mask0("freeze_init", W_INIT, W_FINAL, MASK),
                               np.array([0, -0.2, 0, 0, 0.3, 0], np.float32))
    # The kept weights' starts are untouched, except under freeze_init_zero_all.
    kept = apply_mask1("init", W_INIT, MASK)
    np.testing.assert_array_equal(kept_start("freeze_init_zero_mask", kept, W_INIT, W_FINAL), kept)
    np.testing.assert_allclose(kept_start("freeze_init_zero_all", kept, W_INIT, W_FINAL),
                               np.array([0.5, 0, 0, 0, 0, 0.05], np.float32))  # kept idx 2, 3 moved toward 0
    np.testing.assert_allclose(apply_mask0("freeze_init_zero_all", W_INIT, W_FINAL, MASK), frozen)


def test_mask0_freeze_init_zero_rev_zeroes_pruned_weights_that_moved_away_from_zero():
    np.testing.assert_allclose(apply_mask0("freeze_init_zero_rev", W_INIT, W_FINAL, MASK),
                               np.array([0, 0, 0, 0, 0.3, 0], np.float32))  # idx 1 grew: 0; idx 4 shrank: kept


def test_mask0_freeze_init_zero_reshuffle_zeroes_as_many_pruned_weights_at_random_positions():
    rng = np.random.RandomState(0)
    w_init = rng.randn(400).astype(np.float32)
    w_final = rng.randn(400).astype(np.float32)
    mask = (rng.rand(400) < 0.3).astype(np.float32)
    pruned = mask == 0
    reference = apply_mask0("freeze_init_zero_mask", w_init, w_final, mask)
    zeroed_by_mask = int(np.sum(reference[pruned] == 0))
    positions = []
    for seed in range(3):
        out = apply_mask0("freeze_init_zero_reshuffle", w_init, w_final, mask, np.random.RandomState(seed))
        assert np.all(out[~pruned] == 0)
        assert int(np.sum(out[pruned] == 0)) == zeroed_by_mask
        nonzero = out[pruned] != 0
        np.testing.assert_array_equal(out[pruned][nonzero], w_init[pruned][nonzero])  # the rest stay theta_0
        positions.append(tuple(np.flatnonzero(out == 0)))
    assert len(set(positions)) == 3  # positions follow the rng, not the movement
    assert positions[0] != tuple(np.flatnonzero(reference == 0))
    with pytest.raises(LtKerasError, match="no frozen values"):
        apply_mask0("zero", w_init, w_final, mask)
