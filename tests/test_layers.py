"""Contract tests for MaskedDense / MaskedConv2D."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lt_keras import Mask, MaskedConv2D, MaskedDense, masked_layers
from lt_keras._keras import keras, tf
from lt_keras.mask_sources import FixedMask, TopKMask
from lt_keras.straight_through import product
from tests.conftest import random_mask


def small_cnn(jit=False):
    inputs = keras.Input((8, 8, 3))
    x = MaskedConv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = MaskedDense(16, activation="relu", name="fc")(x)
    outputs = MaskedDense(3, name="out")(x)
    return keras.Model(inputs, outputs)


def randomize_masks(model, density=0.5, seed=1):
    Mask({f"{layer.name}/kernel": random_mask(layer.kernel.shape, density, seed + i)
          for i, layer in enumerate(masked_layers(model))}).apply_to(model)


def batch(n=16, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(n, 8, 8, 3).astype(np.float32), rng.randint(0, 3, n)


def test_variables_and_trainability():
    model = small_cnn()
    for layer in masked_layers(model):
        names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
        assert names == ["kernel", "bias", "kernel_mask"]
        assert not layer.kernel_mask.trainable
        assert layer.kernel_mask in layer.non_trainable_weights
        np.testing.assert_array_equal(layer.kernel_mask.numpy(), 1.0)


def test_a_fixed_mask_is_stored_as_zeros_and_masks_the_gradient():
    layer = MaskedDense(2, use_bias=False)
    layer.build((None, 3))
    layer.kernel.assign([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    layer.kernel_mask.assign([[1, 0], [0, 1], [1, 1]])
    layer.store_zeros()  # what Mask.apply_to, .keras loading and lt_keras.training.fit do
    np.testing.assert_array_equal(layer.kernel.numpy(), [[1, 0], [0, 4], [5, 6]])
    x = np.array([[1.0, 1.0, 1.0]], np.float32)
    with tf.GradientTape() as tape:
        out = layer(x, training=True)
        loss = tf.reduce_sum(out)
    np.testing.assert_array_equal(out.numpy(), [[6.0, 10.0]])
    np.testing.assert_array_equal(tape.gradient(loss, layer.kernel).numpy(), [[1, 0], [0, 1], [1, 1]])


@pytest.mark.parametrize("jit", [False, True])
def test_outputs_and_gradients_equal_the_written_out_product(jit):
    """The layers' outputs and kernel gradients are those of ``kernel * stop_gradient(mask)`` written out."""
    model = small_cnn()
    randomize_masks(model, seed=5)
    x, y = batch(8)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def outputs_and_grads(reference):
        def run(inputs):
            with tf.GradientTape() as tape:
                if reference:  # the product, written out
                    out = inputs
                    for layer in model.layers[1:]:
                        out = _product_call(layer, out) if hasattr(layer, "kernel_mask") else layer(out)
                else:
                    out = model(inputs)
                loss = loss_fn(y, out)
            return out, tape.gradient(loss, [l.kernel for l in masked_layers(model)])

        return (tf.function(run, jit_compile=True) if jit else run)(tf.constant(x))

    out, grads = outputs_and_grads(False)
    ref_out, ref_grads = outputs_and_grads(True)
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), rtol=1e-6, atol=1e-6)
    for g, r, layer in zip(grads, ref_grads, masked_layers(model)):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-6, atol=1e-7)
        assert np.all(g.numpy()[layer.kernel_mask.numpy() == 0] == 0.0)


def _product_call(layer, inputs):
    """The layer's computation with the kernel multiplied by its mask in the forward pass."""
    kernel = layer.kernel * tf.stop_gradient(layer.kernel_mask)
    if isinstance(layer, MaskedConv2D):
        out = layer.convolution_op(inputs, kernel)
    else:
        out = tf.matmul(inputs, kernel)
    if layer.use_bias:
        out = tf.nn.bias_add(out, layer.bias)
    return layer.activation(out) if layer.activation is not None else out


def test_dense_on_rank3_inputs():
    layer = MaskedDense(4, name="seq")
    x = np.random.rand(2, 5, 3).astype(np.float32)
    y = layer(x)
    assert y.shape == (2, 5, 4)
    reference = np.tensordot(x, layer.kernel.numpy(), axes=1) + layer.bias.numpy()
    np.testing.assert_allclose(y.numpy(), reference, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_pruned_weights_stay_exactly_zero_after_50_adam_steps(jit):
    model = small_cnn()
    randomize_masks(model)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    before = {l.name: l.kernel.numpy().copy() for l in masked_layers(model)}
    x, y = batch(64)
    model.fit(x, y, batch_size=16, epochs=13, verbose=0, steps_per_epoch=4, shuffle=False)  # >= 50 steps
    assert model.optimizer.iterations.numpy() >= 50
    for layer in masked_layers(model):
        mask = layer.kernel_mask.numpy()
        effective = layer.masked_kernel().numpy()
        assert np.all(effective[mask == 0] == 0.0)
        # Pruned entries get exactly zero gradient, so the stored kernel does not move there.
        np.testing.assert_array_equal(layer.kernel.numpy()[mask == 0], before[layer.name][mask == 0])
        assert not np.allclose(layer.kernel.numpy()[mask == 1], before[layer.name][mask == 1])


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(1e-2), lambda: keras.optimizers.Adam(1e-2, weight_decay=0.05),
    lambda: keras.optimizers.SGD(0.1, momentum=0.9), lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05),
    lambda: keras.optimizers.RMSprop(1e-2)], ids=["adam", "adamw", "sgdm", "sgdw", "rmsprop"])
def test_mask_apply_stores_zeros_that_survive_100_steps(optimizer):
    """Mask.apply_to stores zeros at pruned entries (get_weights() holds what the layer computes with), and no
    optimizer or weight decay moves them: a user's own check kernel[mask == 0] == 0 holds after training."""
    model = small_cnn()
    masks = Mask({k: random_mask(v.shape, 0.5, 3 + i) for i, (k, v) in enumerate(Mask.from_model(model).items())})
    masks.apply_to(model)
    for layer in masked_layers(model):
        assert np.all(layer.kernel.numpy()[layer.kernel_mask.numpy() == 0] == 0.0)
    model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = batch(64)
    model.fit(x, y, batch_size=16, epochs=25, verbose=0, steps_per_epoch=4, shuffle=False)
    assert model.optimizer.iterations.numpy() == 100
    for layer in masked_layers(model):
        kernel, mask = layer.kernel.numpy(), layer.kernel_mask.numpy()
        assert np.all(kernel[mask == 0] == 0.0) and np.count_nonzero(kernel[mask == 1]) == int(mask.sum())


def test_xla_and_eager_outputs_agree():
    model = small_cnn()
    randomize_masks(model)
    x, _ = batch()
    eager = model(x).numpy()
    compiled = tf.function(lambda t: model(t), jit_compile=True)(tf.constant(x)).numpy()
    np.testing.assert_allclose(eager, compiled, atol=1e-5)


def test_get_config_round_trip():
    for layer in (MaskedDense(7, activation="relu", name="d"), MaskedConv2D(3, 2, strides=2, name="c")):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_serialization_keeps_outputs_and_masks(tmp_path, fmt):
    model = small_cnn()
    randomize_masks(model)
    x, _ = batch()
    expected = model(x).numpy()
    if fmt == "keras":
        path = str(tmp_path / "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    else:
        path = str(tmp_path / "saved")
        model.save(path, save_format="tf")
        loaded = keras.models.load_model(path)
    assert [type(l).__name__ for l in masked_layers(loaded)] == ["MaskedConv2D", "MaskedDense", "MaskedDense"]
    np.testing.assert_array_equal(loaded(x).numpy(), expected)
    assert Mask.from_model(loaded) == Mask.from_model(model)


def test_savedmodel_serves_without_lt_keras(tmp_path):
    model = small_cnn()
    randomize_masks(model)
    x, _ = batch()
    path = str(tmp_path / "serving")
    tf.saved_model.save(model, path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model(x).numpy())
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({path!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r}); y = np.load({str(tmp_path / 'y.npy')!r})\n"
        "out = list(m.signatures['serving_default'](tf.constant(x)).values())[0].numpy()\n"
        "assert 'lt_keras' not in sys.modules\n"
        "print(float(np.abs(out - y).max()))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-5


def test_a_mask_source_is_the_one_hook_a_new_kind_of_mask_needs():
    class NoWeights(FixedMask):
        def mask(self, training=None):
            return tf.zeros_like(self.layer.kernel_mask)

    class AllLearned(TopKMask):  # a learned source: its fast path and the composed path both use ``learned``
        def learned(self, training=None, hard=False, factors=()):
            return product(factors, self.layer.kernel_scores) * 0.0

    for source, options in ((NoWeights, {}), (AllLearned, {"mask_mode": "topk"}),
                            (AllLearned, {"mask_mode": "topk", "dynamic_weight_rescaling": True})):
        for base, args, x in ((MaskedDense, (2,), np.ones((1, 3), np.float32)),
                              (MaskedConv2D, (2, 3), np.ones((1, 4, 4, 3), np.float32))):
            layer = type("Custom", (base,), {"make_mask_source": lambda self, s=source: s(self)})(*args, **options)
            for training in (True, False):
                out = layer(x, training=training).numpy()
                np.testing.assert_array_equal(out, 0.0 * out)
                assert layer.kernel.numpy().any()  # the zeros come from the source, not from the weights


@pytest.mark.parametrize("mode,options", [("fixed", {}), ("topk", {}), ("bernoulli", {"eval_mask": "expected"}),
                                          ("bernoulli", {}), ("topk", {"mask0": "freeze_init"}),
                                          ("bernoulli", {"dynamic_weight_rescaling": True})])
def test_every_sources_fast_path_is_the_composed_kernel(mode, options):
    """A source's kernel (with its fast path) equals kernel * mask composed by the layer, at the same draw."""
    layer = MaskedDense(7, mask_mode=mode, score_init=0.3, **options)
    layer.build((None, 5))
    layer.kernel_mask.assign(random_mask((5, 7), 0.6, 3))
    if layer.kernel_scores is not None:
        layer.kernel_scores.assign(np.random.RandomState(0).randn(5, 7).astype(np.float32))
    for training in (True, False):
        start = None if layer.sample_count is None else layer.sample_count.numpy()
        kernel = layer.masked_kernel(training).numpy()
        if start is not None:
            layer.sample_count.assign(start)
        mask = layer.effective_mask(training)
        np.testing.assert_array_equal(kernel, layer.compose(tf.cast(mask, tf.float32)).numpy())
        assert np.all(kernel[layer.kernel_mask.numpy() == 0] == 0) or layer.kernel_frozen is not None


def test_mask0_freeze_init_keeps_pruned_weights_at_their_frozen_values():
    layer = MaskedDense(2, use_bias=False, mask0="freeze_init")
    layer.build((None, 3))
    init = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    layer.kernel.assign(init)
    layer.kernel_frozen.assign(init)
    layer.kernel_mask.assign([[1, 0], [0, 1], [1, 1]])
    layer.kernel.assign(init * 10)  # "training" moved every weight
    out = layer(np.array([[1.0, 1.0, 1.0]], np.float32))
    # kept positions use the kernel, pruned ones the frozen init: [10+3+50, 2+40+60]
    np.testing.assert_array_equal(out.numpy(), [[63.0, 102.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(np.ones((1, 3), np.float32)))
    grad = tape.gradient(loss, layer.kernel).numpy()
    np.testing.assert_array_equal(grad, [[1, 0], [0, 1], [1, 1]])  # pruned weights take no gradient
    assert not layer.kernel_frozen.trainable and all(w is not layer.kernel_frozen for w in layer.trainable_weights)
    assert MaskedDense.from_config(layer.get_config()).mask0 == "freeze_init"
    with pytest.raises(ValueError, match="mask0"):
        MaskedDense(2, mask0="other")


def test_mask0_freeze_init_round_trips_and_strips(tmp_path):
    from lt_keras import mask_model, strip_masks

    model = mask_model(small_cnn(), mask0="freeze_init")
    assert all(l.mask0 == "freeze_init" for l in masked_layers(model))
    np.testing.assert_array_equal(model.get_layer("fc").kernel_frozen.numpy(), model.get_layer("fc").kernel.numpy())
    randomize_masks(model)
    model.get_layer("fc").kernel.assign(model.get_layer("fc").kernel * 3.0)
    x, _ = batch()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_allclose(strip_masks(model)(x).numpy(), model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("optimizer", [lambda: keras.optimizers.Adam(1e-2),
                                       lambda: keras.optimizers.SGD(0.1, momentum=0.9),
                                       lambda: keras.optimizers.legacy.Adam(1e-2)], ids=["adam", "sgdm", "legacy_adam"])
def test_a_mask_applied_in_the_middle_of_training_keeps_pruned_entries_zero(optimizer):
    """Mask.apply_to zeroes the optimizer's momenta at pruned entries too: without that, a mask applied to a
    model whose optimizer has state would let the old momentum move pruned weights off zero."""
    model = small_cnn()
    model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = batch(64)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, steps_per_epoch=4, shuffle=False)  # momenta everywhere
    randomize_masks(model, seed=9)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, steps_per_epoch=4, shuffle=False)
    for layer in masked_layers(model):
        kernel, mask = layer.kernel.numpy(), layer.kernel_mask.numpy()
        assert np.all(kernel[mask == 0] == 0.0) and np.count_nonzero(kernel[mask == 1]) == int(mask.sum())


def test_a_keras_file_with_values_at_pruned_entries_loads_with_zeros(tmp_path):
    """Files written before stored zeros kept the kernel's values where pruned; loading stores zeros."""
    model = small_cnn()
    randomize_masks(model, seed=11)
    raw = {l.name: np.random.RandomState(4).randn(*l.kernel.shape).astype(np.float32) for l in masked_layers(model)}
    for layer in masked_layers(model):
        layer.kernel.assign(raw[layer.name])  # as an older version stored it
    model.save(str(tmp_path / "old.keras"))
    loaded = keras.models.load_model(str(tmp_path / "old.keras"))
    x, _ = batch()
    for layer in masked_layers(loaded):
        np.testing.assert_array_equal(layer.kernel.numpy(), raw[layer.name] * layer.kernel_mask.numpy())
    reference = model
    for layer in masked_layers(reference):
        layer.store_zeros()
    np.testing.assert_allclose(loaded(x).numpy(), reference(x).numpy(), atol=1e-6)
