"""Sparsity patterns: blocks and n:m groups, in IMP's pruning and checked on every mask."""
import numpy as np
import pytest

from lt_keras import ConfigError, Mask
from lt_keras.imp import ImpConfig
from lt_keras.methods.imp import search as imp_search
from lt_keras.patterns import SparsityPattern, check_masks
from lt_keras.pruning import prune_count, prune_in_pattern, prune_layerwise
from tests.conftest import IMP_TRAIN as TRAIN
from tests.conftest import build_lenet as build


def test_parse_and_text():
    for text in ("unstructured", "block:1x4", "block:4x1", "block:2x2", "2:4", "1:8"):
        assert SparsityPattern.parse(text).text == text
    assert SparsityPattern.parse("2:4").density == 0.5 and not SparsityPattern.parse("unstructured").structured
    for bad in ("block:1x1", "block:0x4", "4:4", "0:4", "5:4", "block", "1x4", "2-4", ""):
        with pytest.raises(ConfigError, match="^sparsity_pattern: .* is not a sparsity pattern"):
            SparsityPattern.parse(bad)


def asp_m4n2_1d(weight_out_in):
    """NVIDIA ASP's mn_1d_best as its code computes it, for (out, in) weights: in each group of 4 consecutive inputs
    of a row, the 2 entries with the smallest |w| are pruned (``argsort(abs(mat))[:, :m - n]``)."""
    mat = np.abs(weight_out_in).reshape(-1, 4)
    mask = np.ones_like(mat)
    np.put_along_axis(mask, np.argsort(mat, axis=1)[:, :2], 0.0, axis=1)
    return mask.reshape(weight_out_in.shape)


def test_two_of_four_keeps_what_the_reference_keeps():
    """Same arrays, same answer: a Keras (in, out) kernel's 2:4 mask is ASP's on the (out, in) weight."""
    rng = np.random.RandomState(0)
    for shape in ((16, 6), (3, 3, 8, 5)):  # Dense, and a convolution (fan_in = kh * kw * in)
        kernel = rng.randn(*shape)
        ours = SparsityPattern.parse("2:4").keep_n_of_m(np.abs(kernel), np.ones(shape))
        reference = asp_m4n2_1d(kernel.reshape(-1, shape[-1]).T).T.reshape(shape)
        np.testing.assert_array_equal(ours, reference)
        assert ours.mean() == 0.5 and SparsityPattern.parse("2:4").violations(ours) == 0


def test_n_of_m_edges_ties_and_pruned_weights():
    pattern = SparsityPattern.parse("2:4")
    scores = np.arange(6, dtype=float)[:, None] * np.ones((1, 2))  # fan_in 6: one whole group and 2 padded
    mask = np.ones((6, 2))
    mask[3, 1] = 0  # a pruned weight is never kept again
    kept = pattern.keep_n_of_m(scores, mask)
    np.testing.assert_array_equal(kept[:, 0], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(kept[:, 1], [0, 1, 1, 0, 1, 1])
    ties = pattern.keep_n_of_m(np.zeros((8, 1)), np.ones((8, 1)))
    np.testing.assert_array_equal(ties[:, 0], [1, 1, 0, 0, 1, 1, 0, 0])  # without an rng: lowest index first
    drawn = [pattern.keep_n_of_m(np.zeros((8, 1)), np.ones((8, 1)), np.random.RandomState(s)) for s in range(6)]
    assert all(d.sum() == 4 and pattern.violations(d) == 0 for d in drawn)
    assert len({d.tobytes() for d in drawn}) > 1  # with one: a random pick among equals
    assert pattern.violations(np.ones((8, 1))) == 2


def test_blocks_score_by_mean_prune_whole_and_count_in_blocks():
    pattern = SparsityPattern.parse("block:1x4")
    rng = np.random.RandomState(1)
    scores = {"a": rng.rand(10, 3), "b": rng.rand(8, 2)}  # a: fan_in 10 = 2 whole blocks and a half one
    mask = Mask({k: np.ones_like(v) for k, v in scores.items()})
    rates = {"a": 0.4, "b": 0.5}
    pruned = prune_in_pattern(scores, mask, pattern, ["a", "b"],
                              lambda s, m: prune_layerwise(s, m, rates, count_rule="round"))
    assert pattern.violations(pruned["a"]) == pattern.violations(pruned["b"]) == 0
    block_scores, alive = pattern.block_scores(scores["a"], mask["a"])
    assert block_scores.shape == (3, 3) and alive.all()
    np.testing.assert_allclose(block_scores[2], scores["a"][8:].mean(axis=0))  # the half block: its 2 weights
    blocks_pruned = 9 - pattern.block_scores(scores["a"], pruned["a"])[1].sum()
    assert blocks_pruned == prune_count(0.4, 9)
    lowest = np.argsort(block_scores.ravel())[: prune_count(0.4, 9)]
    assert not pattern.block_scores(scores["a"], pruned["a"])[1].ravel()[lowest].any()  # the lowest means went
    with pytest.raises(ConfigError, match="breaks block:1x4"):
        check_masks({"a": np.eye(4)}, pattern, ["a"])


def test_imp_prunes_in_blocks_and_in_two_of_four(tmp_path, data):
    results = imp_search(str(tmp_path / "blocks"), build, data, ImpConfig(rounds=2, sparsity_pattern="block:1x4"),
                         TRAIN, verbose=0)
    pattern = SparsityPattern.parse("block:1x4")
    for k in (1, 2):
        mask = Mask.load(str(tmp_path / "blocks" / f"round_{k}" / "mask.npz"))
        assert all(pattern.violations(mask[key]) == 0 for key in mask)
        assert abs(results[k]["layer_density"]["fc1/kernel"] - 0.8 ** k) < 0.01
    assert '"sparsity_pattern": "block:1x4"' in (tmp_path / "blocks" / "round_2" / "ticket" / "ticket.json").read_text()
    imp_search(str(tmp_path / "nm"), build, data, ImpConfig(target_density=0.5, sparsity_pattern="2:4"), TRAIN,
               verbose=0)
    mask = Mask.load(str(tmp_path / "nm" / "round_1" / "mask.npz"))
    for key in mask:  # LeNet's fan-ins (784, 300, 100) are whole groups: exactly 2 of every 4
        groups = mask[key].reshape(-1, 4, mask[key].shape[-1]).sum(axis=1)
        assert (groups == 2).all(), key
    with pytest.raises(ConfigError, match="2:4 prunes once, to 0.5 of the weights: set target_density=0.5"):
        ImpConfig(rounds=3, sparsity_pattern="2:4")


@pytest.mark.parametrize("pattern, keep", [("block:1x4", 0.25), ("block:2x2", 0.3), ("2:4", 0.5)])
def test_top_k_supermasks_keep_whole_units(pattern, keep):
    """The top-k supermask in a pattern keeps exactly round(keep * blocks) blocks (the largest mean |score|) or n
    of every m; it trains through the straight-through slope and its ticket obeys the pattern."""
    from lt_keras import keras, masked_layers, supermask
    from lt_keras.mask_sources import TopKMask

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)  # fan_in 27: partial blocks and groups
    model = keras.Model(inputs, keras.layers.Dense(6, name="out")(keras.layers.Flatten()(x)))
    model = supermask.to_supermask(model, "topk", keep_fraction=keep, sparsity_pattern=pattern)
    parsed = SparsityPattern.parse(pattern)
    for layer in masked_layers(model):
        assert layer.get_config()["sparsity_pattern"] == pattern
        hard = layer.hard_mask().numpy()
        scores = layer.kernel_scores.numpy()
        assert parsed.violations(hard) == 0
        if parsed.kind == "block":
            means, _ = parsed.block_scores(np.abs(scores), np.ones(scores.shape))
            k = round(keep * means.size)
            kept_blocks = parsed.block_scores(hard, hard)[1]
            assert kept_blocks.sum() == k and means[kept_blocks > 0].min() >= means[kept_blocks == 0].max()
        else:
            np.testing.assert_array_equal(hard, parsed.keep_n_of_m(np.abs(scores), np.ones(scores.shape)))
    assert isinstance(masked_layers(model)[0].mask_source, TopKMask)
    x, y = np.random.RandomState(0).randn(16, 4, 4, 3).astype(np.float32), np.arange(16) % 6
    model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = masked_layers(model)[0].kernel_scores.numpy().copy()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert not np.array_equal(before, masked_layers(model)[0].kernel_scores.numpy())  # the scores learn
    ticket = supermask.to_ticket(model)
    assert all(parsed.violations(m) == 0 for m in Mask.from_model(ticket).values())
    with pytest.raises(ConfigError, match="needs the top-k supermask"):
        supermask.LearnConfig(estimator="bernoulli", sparsity_pattern=pattern)
