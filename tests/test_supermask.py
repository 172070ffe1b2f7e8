"""Supermask layers and helpers: frozen weights, straight-through scores, exact top-k, evaluation modes."""
import numpy as np
import pytest

from lt_keras import Mask, MaskedDense, masked_layers, supermask
from lt_keras._keras import keras, tf
from lt_keras.errors import LtKerasError
from lt_keras.models import build_model


def small(estimator="bernoulli", **kwargs):
    keras.utils.set_random_seed(0)  # the same weights and scores; ``seed=`` keys the Bernoulli draws
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    return supermask.to_supermask(model, estimator, **kwargs)


def data(n=240, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 12).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)


@pytest.mark.parametrize("estimator", ["bernoulli", "topk"])
@pytest.mark.parametrize("jit", [False, True])
def test_training_moves_only_the_scores(estimator, jit):
    model = small(estimator)
    frozen = {v.name: v.numpy().copy() for l in masked_layers(model) for v in (l.kernel, l.bias)}
    scores = {l.name: l.kernel_scores.numpy().copy() for l in masked_layers(model)}
    assert {v.name.split("/")[-1].split(":")[0] for v in model.trainable_weights} == {"kernel_scores"}
    model.compile(keras.optimizers.SGD(10.0, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    x, y = data()
    model.fit(x, y, batch_size=60, epochs=2, verbose=0)
    for layer in masked_layers(model):
        for v in (layer.kernel, layer.bias):
            np.testing.assert_array_equal(v.numpy(), frozen[v.name])  # bitwise unchanged
        assert not np.array_equal(layer.kernel_scores.numpy(), scores[layer.name])  # gradients reached them


@pytest.mark.parametrize("estimator, eval_mask", [("topk", "topk"), ("bernoulli", "sampled"),
                                                   ("bernoulli", "expected")])
@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_straight_through_gradient_of_the_scores(estimator, eval_mask, rescale, jit):
    """d loss / d scores = d loss / d (masked kernel) * kernel * kernel_mask * slope, the slope being
    sign(scores) for top-k (edge-popup's |scores|) and sigmoid'(scores) for Bernoulli (Zhou et al.). Dynamic
    weight rescaling multiplies the kernel by c = numel / kept, and as in Zhou et al.'s code the count takes the
    gradient too (d loss / d mask by hand below).
    Without rescaling the sampler returns the masked kernel itself; with it, a mask."""
    rng = np.random.default_rng(0)
    layer = MaskedDense(5, use_bias=False, mask_mode=estimator, keep_fraction=0.4, eval_mask=eval_mask,
                        dynamic_weight_rescaling=rescale)
    layer.build((None, 6))
    layer.kernel_scores.assign(rng.standard_normal((6, 5)).astype(np.float32))
    layer.kernel_mask.assign((rng.random((6, 5)) < 0.6).astype(np.float32))
    upstream = tf.constant(rng.standard_normal((6, 5)).astype(np.float32))

    @tf.function(jit_compile=jit)
    def kernel_and_gradient():
        with tf.GradientTape() as tape:
            kernel = layer.masked_kernel(training=False)
            loss = tf.reduce_sum(upstream * kernel)
        return kernel, tape.gradient(loss, layer.kernel_scores)

    kernel, gradient = kernel_and_gradient()
    s = layer.kernel_scores.numpy()
    prob = 1.0 / (1.0 + np.exp(-s))
    slope = np.sign(s) if estimator == "topk" else prob * (1.0 - prob)
    u, w, fixed = upstream.numpy(), layer.kernel.numpy(), layer.kernel_mask.numpy()
    if rescale:
        kept = np.count_nonzero(kernel.numpy())
        c = s.size / kept
        m = (kernel.numpy() != 0).astype(np.float32)  # the mask this pass used (kernel entries are nonzero)
        # loss = c(m) * sum(u * w * m) with c = numel / sum(m): d loss / d m_i = c * u_i * w_i - c / kept * S
        d_mask = c * u * w - c / kept * np.sum(u * w * m)
        expected = d_mask * fixed * slope
    else:
        expected = u * w * fixed * slope
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-5, atol=1e-6)  # the count term cancels


def test_topk_keeps_exactly_the_requested_count():
    model = small("topk", keep_fraction=0.3)
    for layer in masked_layers(model):
        n = int(np.prod(layer.kernel.shape))
        assert int(layer.hard_mask().numpy().sum()) == round(0.3 * n)
        # the kept entries are the largest |scores|
        s = np.abs(layer.kernel_scores.numpy()).ravel()
        kept = layer.hard_mask().numpy().ravel() > 0
        assert s[kept].min() >= s[~kept].max()


def test_topk_training_keeps_exact_masks_and_no_extra_weights():
    """The per-step select adds no weight and keeps exactly k entries, the largest |scores|."""
    model = small("topk", keep_fraction=0.3)
    names = {w.name.split("/")[-1] for w in model.weights}
    assert names == {"kernel:0", "bias:0", "kernel_mask:0", "kernel_scores:0"}
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    model.fit(*data(), batch_size=60, epochs=2, verbose=0)
    for layer in masked_layers(model):
        s = np.abs(layer.kernel_scores.numpy()).ravel()
        kept = layer.hard_mask().numpy().ravel() > 0
        assert kept.sum() == round(0.3 * s.size) and s[kept].min() >= s[~kept].max()


def test_sampled_masks_track_sigmoid_scores():
    layer = MaskedDense(400, mask_mode="bernoulli")
    layer.build((None, 50))
    p = np.random.RandomState(0).uniform(0.05, 0.95, (50, 400)).astype(np.float32)
    layer.kernel_scores.assign(np.log(p / (1 - p)))
    samples = np.stack([layer.mask_source.learned(training=True, hard=False).numpy() for _ in range(200)])
    assert set(np.unique(samples)) == {0.0, 1.0}  # straight-through forward values are hard 0/1
    # mean over samples per entry tracks p (std of a mean of 200 Bernoullis <= 0.036)
    assert np.abs(samples.mean(0) - p).mean() < 0.03
    assert abs(samples.mean() - p.mean()) < 0.005


def test_eval_modes_on_hand_made_scores():
    layer = MaskedDense(2, use_bias=False, mask_mode="bernoulli", eval_mask="expected")
    layer.build((None, 3))
    layer.kernel.assign(np.ones((3, 2), np.float32))
    layer.kernel_scores.assign([[5.0, -5.0], [0.1, -0.1], [-3.0, 3.0]])
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), [[2.0, 1.0]])  # sigmoid > 0.5
    np.testing.assert_array_equal(layer.hard_mask().numpy(), [[1, 0], [1, 0], [0, 1]])
    topk = MaskedDense(2, use_bias=False, mask_mode="topk", keep_fraction=0.5)
    topk.build((None, 3))
    topk.kernel.assign(np.ones((3, 2), np.float32))
    topk.kernel_scores.assign([[5.0, -0.5], [0.1, -4.0], [-3.0, 0.2]])
    np.testing.assert_array_equal(topk(x, training=False).numpy(), [[2.0, 1.0]])  # |5|, |-4|, |-3| kept
    rescaled = MaskedDense(2, use_bias=False, mask_mode="topk", keep_fraction=0.5, dynamic_weight_rescaling=True)
    rescaled.build((None, 3))
    rescaled.kernel.assign(np.ones((3, 2), np.float32))
    rescaled.kernel_scores.assign(topk.kernel_scores)
    np.testing.assert_array_equal(rescaled(x, training=False).numpy(), [[4.0, 2.0]])  # x 6/3
    with pytest.raises(ValueError, match="eval_mask"):
        MaskedDense(2, mask_mode="topk", eval_mask="expected")


def test_sampled_evaluation_averages_samples():
    model = small("bernoulli")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(60)
    sampled = supermask.evaluate(model, ds, "sampled", samples=5)
    assert sampled["samples"] == 5 and sampled["accuracy_std"] > 0  # different masks each sample
    expected = [supermask.evaluate(model, ds, "expected") for _ in range(2)]
    assert expected[0]["samples"] == 1 and expected[0]["accuracy"] == expected[1]["accuracy"]
    assert supermask.evaluate(model, (x, y), "expected")["accuracy"] == expected[0]["accuracy"]  # arrays too
    with pytest.raises(LtKerasError, match=r"\(x, y\) pair"):
        supermask.evaluate(model, x)


def test_serialization_keeps_scores_and_mode(tmp_path):
    model = small("topk", keep_fraction=0.25, dynamic_weight_rescaling=True)
    path = str(tmp_path / "sm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(masked_layers(model), masked_layers(loaded)):
        assert (b.mask_mode, b.keep_fraction, b.dynamic_weight_rescaling) == ("topk", 0.25, True)
        np.testing.assert_array_equal(a.kernel_scores.numpy(), b.kernel_scores.numpy())
    x, _ = data(8)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_ticket_computes_what_the_supermask_computed():
    model = small("bernoulli", eval_mask="expected", dynamic_weight_rescaling=True)
    for layer in masked_layers(model):
        layer.kernel_scores.assign(np.random.RandomState(1).randn(*layer.kernel.shape).astype(np.float32))
    ticket = supermask.to_ticket(model)
    x, _ = data(16)
    np.testing.assert_allclose(ticket(x).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert all(not l.is_supermask and l.kernel.trainable for l in masked_layers(ticket))
    assert Mask.from_model(ticket) == supermask.hard_mask(model)


def test_weight_inits():
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    supermask.init_weights(model, "signed_constant", seed=3)
    fc1 = model.get_layer("fc1").kernel.numpy()
    assert len(np.unique(np.abs(fc1))) == 1 and abs(np.abs(fc1[0, 0]) - np.sqrt(2 / (784 + 300))) < 0.01
    supermask.init_weights(model, "signed_kaiming_constant", seed=3)
    np.testing.assert_allclose(np.abs(model.get_layer("fc2").kernel.numpy()), np.sqrt(2 / 300), rtol=1e-6)
    supermask.init_weights(model, "kaiming_normal", seed=3)
    fc1 = model.get_layer("fc1").kernel.numpy()
    assert abs(fc1.std() / np.sqrt(2 / 784) - 1) < 0.01
    assert np.abs(fc1).max() > 4 * np.sqrt(2 / 784)  # untrained normal, as torch's kaiming_normal_ (HeNormal cuts at 2)
    with pytest.raises(LtKerasError, match="weight_init"):
        supermask.init_weights(model, "uniform")


def test_criterion_mask_and_untrained_accuracy():
    init = {"a/kernel": np.array([[1.0, -2.0], [3.0, -4.0]])}
    final = {"a/kernel": np.array([[2.0, 5.0], [-1.0, -6.0]])}
    mask = supermask.criterion_mask(init, final, "large_final_same_sign", 0.5)
    np.testing.assert_array_equal(mask["a/kernel"], [[1, 0], [0, 1]])  # same sign, largest |final|
    plain = supermask.to_ticket(small("topk"))
    x, y = data(60)
    acc = supermask.untrained_accuracy(plain, Mask.from_model(plain), "signed_constant",
                                       tf.data.Dataset.from_tensor_slices((x, y)).batch(60))
    w = plain.get_layer("hidden").kernel.numpy()
    assert len(np.unique(np.abs(w[w != 0]))) == 1  # signed constant applied
    assert acc == pytest.approx(float(np.mean(np.argmax(plain(x).numpy(), -1) == y)))  # of the changed weights


def test_untrained_accuracy_follows_the_mask_it_is_given():
    """Hand-computed: x = e1, e2 with labels 0, 1 through one 2x2 kernel [[1, 1], [-1, 1]] (no bias).

    All ones: logits [1, 1] -> 0 (first of a tie), [-1, 1] -> 1: 100%. Keeping the off-diagonal:
    [0, 1] -> 1 (wrong), [-1, 0] -> 1: 50%. Keeping only the top right: [0, 1] -> 1, [0, 0] -> 0: 0%.
    """
    x = np.eye(2, dtype=np.float32)
    y = np.array([0, 1], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    for kept, expected in (([[1, 1], [1, 1]], 1.0), ([[0, 1], [1, 0]], 0.5), ([[0, 1], [0, 0]], 0.0)):
        model = keras.Sequential([keras.Input((2,)), MaskedDense(2, use_bias=False, name="d")])
        model.get_layer("d").kernel.assign([[1.0, 1.0], [-1.0, 1.0]])
        mask = Mask({"d/kernel": np.array(kept, np.float32)})
        assert supermask.untrained_accuracy(model, mask, "init", dataset) == expected, kept


def test_density_logger_in_a_users_fit():
    model = small("bernoulli")
    model.compile(keras.optimizers.SGD(50.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[supermask.MaskDensityLogger()])
    assert history.history["mask_density"][0] != 0.5 and 0 < history.history["mask_density"][-1] < 1


MIRRORED_TOPK = """
import numpy as np
from lt_keras import distribute, masked_layers, supermask
from lt_keras._keras import keras, tf
distribute.split_cpu(2)
strategy = distribute.make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = supermask.to_supermask(keras.Model(inputs, keras.layers.Dense(3)(hidden)), "topk", keep_fraction=0.3)
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.RandomState(0).randn(240, 12).astype(np.float32)
model.fit(x, (x[:, 0] > 0).astype(np.int32), batch_size=60, epochs=2, verbose=0)
for layer in masked_layers(model):
    s = np.abs(layer.kernel_scores.numpy()).ravel()
    kept = layer.hard_mask().numpy().ravel() > 0
    assert kept.sum() == round(0.3 * s.size) and s[kept].min() >= s[~kept].max()
print("ok")
"""


def test_topk_fit_under_a_mirrored_strategy():
    """Two replicas (logical CPUs, set before TensorFlow starts: a fresh process) keep exact top-k masks."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", MIRRORED_TOPK], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_bernoulli_draws_are_a_function_of_seed_layer_and_count(tmp_path):
    """Each draw is keyed by (sample_seed, layer name, draw count): reproducible, fresh per draw, saved with the
    model."""
    a, b, other = small(), small(), small(seed=1)
    layer_a, layer_b, layer_o = (masked_layers(m)[0] for m in (a, b, other))
    draws_a = [layer_a.mask_source.learned(training=True).numpy() for _ in range(3)]
    draws_b = [layer_b.mask_source.learned(training=True).numpy() for _ in range(3)]
    for x, y in zip(draws_a, draws_b):
        np.testing.assert_array_equal(x, y)  # same seed, layer and count: the same mask
    assert not np.array_equal(draws_a[0], draws_a[1])  # a new count: a fresh mask
    assert not np.array_equal(layer_o.mask_source.learned(training=True).numpy(), draws_a[0])  # another seed
    assert int(layer_a.sample_count.numpy()) == 3
    path = str(tmp_path / "m.keras")
    a.save(path)
    loaded = keras.models.load_model(path)
    layer_l = masked_layers(loaded)[0]
    assert int(layer_l.sample_count.numpy()) == 3 and layer_l.sample_seed == 0
    np.testing.assert_array_equal(layer_l.mask_source.learned(training=True).numpy(),
                                  layer_a.mask_source.learned(training=True).numpy())  # the 4th draw, in both


def test_killed_bernoulli_supermask_fit_resumes_bit_identical(tmp_path):
    """A supermask fit killed after its 2nd evaluation and resumed draws the masks the uninterrupted one draws."""
    from lt_keras.data import DataConfig
    from lt_keras.training import TrainConfig, fit

    data = DataConfig(max_train_examples=600).load()
    cfg = TrainConfig(train_steps=30, eval_every=10, seed=0, jit_compile=False, optimizer="sgd",
                      learning_rate=50.0)

    def model():
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        m = supermask.init_weights(build_model("lenet_300_100", (28, 28, 1), 10), "signed_constant", seed=0)
        return supermask.to_supermask(m, "bernoulli", seed=5)

    class Die(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(model(), data, cfg, callbacks=[Die()], verbose=0, backup_dir=backup)
    resumed_model = model()
    resumed = fit(resumed_model, data, cfg, verbose=0, backup_dir=backup)
    whole_model = model()
    whole = fit(whole_model, data, cfg, verbose=0)
    for x, y in zip(resumed_model.get_weights(), whole_model.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in whole.history]
    counts = [int(l.sample_count.numpy()) for l in masked_layers(whole_model)]
    assert counts[0] == counts[-1] > 30  # one draw per training step, plus the evaluations' draws


def test_learn_and_untrained_are_one_library_call_each(tmp_path):
    """The lt-supermask method from Python, no flags: a learned ticket, then untrained masks of a dense run."""
    from lt_keras.data import DataConfig
    from lt_keras.io_utils import save_weights
    from lt_keras.methods import RunSpec, Supermask, SupermaskConfig
    from lt_keras.ticket import load_ticket
    from lt_keras.training import TrainConfig

    data = DataConfig(max_train_examples=300)
    train = TrainConfig(train_steps=6, eval_every=3, batch_size=100, optimizer="sgd", learning_rate=50.0,
                        jit_compile=False)
    spec = RunSpec("lenet_300_100", data, train)
    learn = supermask.LearnConfig(estimator="topk", keep_fraction=0.3)
    summary = Supermask(SupermaskConfig(learn=learn)).run(str(tmp_path / "learn"), spec)
    assert summary["mode"] == "learn" and abs(summary["ticket_density"] - 0.3) < 1e-3
    assert load_ticket(tmp_path / "learn" / "ticket").info.settings["estimator"] == "topk"
    assert not (tmp_path / "learn" / "backup").exists()
    assert "--estimator=topk" in (tmp_path / "learn" / "flags.txt").read_text().splitlines()
    dense = tmp_path / "dense"
    dense.mkdir()
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    save_weights(str(dense / "init_weights.npz"), model.get_weights())
    model.save(str(dense / "model.keras"))
    untrained = supermask.UntrainedConfig(from_run=str(dense), densities=(0.5,))
    rows = Supermask(SupermaskConfig(untrained=untrained)).run(str(tmp_path / "untrained"), spec)["rows"]
    assert [r["keep_per_layer"] for r in rows] == [0.5] and 0 <= rows[0]["accuracy"] <= 1
    with pytest.raises(LtKerasError, match="densities: "):
        supermask.UntrainedConfig(densities=(1.5,))
    with pytest.raises(LtKerasError, match="eval_mask: "):
        supermask.LearnConfig(estimator="topk", eval_mask="sampled")


def test_bernoulli_supermask_learns_the_same_with_one_or_many_steps_per_call():
    """Draws are keyed by a per-layer count of calls, not by how steps are grouped into calls: the same seed
    gives bit-identical scores and accuracies with one step per call and with auto (10 here)."""
    from lt_keras.data import DataConfig
    from lt_keras.training import TrainConfig, fit

    data = DataConfig(max_train_examples=600).load()
    runs = {}
    for per_call in ("1", "auto"):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = supermask.to_supermask(supermask.init_weights(build_model("lenet_300_100", (28, 28, 1), 10),
                                                              "signed_constant", seed=0), "bernoulli", seed=5)
        result = fit(model, data, TrainConfig(train_steps=30, eval_every=10, seed=0, jit_compile=False,
                                              optimizer="sgd", learning_rate=50.0, steps_per_execution=per_call),
                     verbose=0)
        runs[per_call] = model.get_weights(), [r["test_accuracy"] for r in result.history]
    assert runs["1"][1] == runs["auto"][1]
    for a, b in zip(runs["1"][0], runs["auto"][0]):
        np.testing.assert_array_equal(a, b)


def test_top_k_scores_start_as_the_edge_popup_code():
    """kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = kh * kw * in (torch's
    weight (out, in, kh, kw) has the same fan_in); the old sqrt(6 / fan_in) bound was 2.45x wider."""
    from lt_keras import MaskedConv2D, MaskedDense

    for layer, shape, fan_in in ((MaskedDense(300, mask_mode="topk"), (None, 784), 784),
                                 (MaskedConv2D(64, 3, mask_mode="topk"), (None, 32, 32, 16), 3 * 3 * 16)):
        layer.build(shape)
        scores, bound = layer.kernel_scores.numpy(), np.float32(1 / np.sqrt(fan_in))
        assert np.abs(scores).max() <= bound and np.abs(scores).max() > 0.99 * bound
        assert abs(scores.std() / (bound / np.sqrt(3)) - 1) < 0.03


def test_expected_bernoulli_mask_keeps_only_scores_above_zero():
    """The expected mask is sigmoid(score) > 0.5: a score of exactly 0 (p = 0.5, the paper's initial score) is
    not kept."""
    from lt_keras import MaskedDense

    layer = MaskedDense(3, mask_mode="bernoulli", eval_mask="expected")
    layer.build((None, 2))
    layer.kernel_scores.assign([[0.0, 1e-6, -1e-6], [0.0, 2.0, -2.0]])
    np.testing.assert_array_equal(layer.hard_mask().numpy(), [[0, 1, 0], [0, 1, 0]])


def test_a_supermask_model_is_the_same_built_directly_or_converted():
    """The searches build supermask layers from the config (no converting clone); a user converts their own model.
    Both give the same top-k scores: the draw is keyed by (seed, layer name), not by the global random state."""
    options = supermask.LearnConfig(estimator="topk", keep_fraction=0.3).layer_options(seed=4)
    direct = build_model("lenet_300_100", (28, 28, 1), 10, **options)
    keras.utils.set_random_seed(99)  # the conversion draws other kernels first: the scores must not care
    converted = supermask.to_supermask(build_model("lenet_300_100", (28, 28, 1), 10), "topk", keep_fraction=0.3,
                                       seed=4)
    other_seed = build_model("lenet_300_100", (28, 28, 1), 10, **dict(options, sample_seed=5))
    for a, b, c in zip(masked_layers(direct), masked_layers(converted), masked_layers(other_seed)):
        assert (a.mask_mode, a.keep_fraction, a.sample_seed) == (b.mask_mode, b.keep_fraction, b.sample_seed)
        np.testing.assert_array_equal(a.kernel_scores.numpy(), b.kernel_scores.numpy())
        assert not np.array_equal(a.kernel_scores.numpy(), c.kernel_scores.numpy())


def test_supermask_options_have_one_validation():
    from lt_keras.errors import ConfigError

    for bad, field in (({"eval_mask": "expected"}, "eval_mask"), ({"keep_fraction": 1.5}, "keep_fraction")):
        with pytest.raises(ConfigError) as from_config:
            supermask.LearnConfig(estimator="topk", **bad)
        with pytest.raises(ConfigError) as from_layer:
            MaskedDense(2, mask_mode="topk", **bad)
        assert from_config.value.field == from_layer.value.field == field
    with pytest.raises(ConfigError, match="estimator"):
        supermask.LearnConfig(estimator="fixed")
