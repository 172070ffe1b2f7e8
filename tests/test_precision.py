"""8-bit search precision: quantized weights/activations/gradients, exact masks, the way back to fp32."""
import numpy as np
import pytest

from lt_keras import ConfigError, LtKerasError, Mask, masked_layers, quantize, supermask
from lt_keras._keras import keras, tf
from lt_keras.models import build_model
from lt_keras.precision import SearchPrecision


def masked(name="lenet_300_100", shape=(28, 28, 1), seed=0):
    keras.utils.set_random_seed(seed)
    model = build_model(name, shape, 10)
    rng = np.random.RandomState(seed)
    Mask({k: rng.rand(*v.shape) < 0.5 for k, v in Mask.from_model(model).items()}).apply_to(model)
    return model


def batch(shape=(28, 28, 1), n=60, seed=1):
    rng = np.random.RandomState(seed)
    return rng.randn(n, *shape).astype(np.float32), rng.randint(0, 10, n)


def test_stochastic_rounding_is_unbiased_keeps_zero_and_uses_few_levels():
    x = tf.constant(np.r_[np.linspace(-1, 1, 99), 0.0].astype(np.float32))
    draws = np.stack([quantize.stochastic_round_quantize(x, 4).numpy() for _ in range(3000)])
    assert all(len(np.unique(d)) <= 2 ** 4 - 1 for d in draws[:20])
    assert np.all(draws[:, -1] == 0) and np.all(draws[:, 49] == 0)  # zero stays exactly zero
    np.testing.assert_allclose(draws.mean(0), x.numpy(), atol=0.01)  # unbiased (std of mean ~0.003)
    zeros = tf.zeros((5,))
    np.testing.assert_array_equal(quantize.stochastic_round_quantize(zeros, 8).numpy(), 0)


def test_weights_are_quantized_per_channel_and_masked_weights_stay_zero():
    model = masked("conv4", (32, 32, 3))
    q = SearchPrecision("int8").to_search(model)
    conv = next(l for l in q.layers if getattr(l, "layer", None) is not None and l.layer.name == "conv2")
    inner = conv.layer
    quantizer = conv._weight_vars[0][1]
    w = quantizer(inner.kernel, training=True, weights={}).numpy()
    assert np.all(w[inner.kernel_mask.numpy() == 0] == 0)
    for c in range(w.shape[-1]):
        assert len(np.unique(w[..., c])) <= 2 ** 8 - 1
    assert len(np.unique(w)) > 255  # scales differ per channel
    dense = next(l for l in q.layers if getattr(l, "layer", None) is not None and l.layer.name == "fc1")
    wd = dense._weight_vars[0][1](dense.layer.kernel, training=True, weights={}).numpy()
    assert len(np.unique(wd)) <= 2 ** 8 - 1  # per tensor for dense layers


def test_activations_and_gradients_take_few_values_and_pruned_weights_never_move():
    model = masked()
    q = SearchPrecision("int8", weight_bits=8, activation_bits=6, gradient_bits=5).to_search(model)
    x, y = batch()
    hidden = keras.Model(q.input, q.get_layer("quant_fc1").output)
    q.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(x, y, epochs=2, verbose=0)  # moving-average ranges settle
    assert len(np.unique(hidden(x, training=False).numpy())) <= 2 ** 6
    fc1 = masked_layers(q)[0]
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, q(x, training=True))
    grad = tape.gradient(loss, fc1.kernel).numpy()
    assert len(np.unique(grad)) <= 2 ** 5 - 1 and np.all(grad[fc1.kernel_mask.numpy() == 0] == 0)
    before = masked_layers(model)[0].kernel.numpy()
    pruned = fc1.kernel_mask.numpy() == 0
    np.testing.assert_array_equal(fc1.kernel.numpy()[pruned], before[pruned])  # pruned weights never moved


def test_fp32_int8_fp32_round_trip_is_exact():
    model = masked("vgg11_bn", (32, 32, 3))
    int8 = SearchPrecision("int8")
    back = int8.to_fp32(int8.to_search(model))
    assert Mask.from_model(back) == Mask.from_model(model)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    x, _ = batch((32, 32, 3), 4)
    np.testing.assert_array_equal(back(x, training=False).numpy(), model(x, training=False).numpy())


def test_xla_and_eager_agree():
    q = SearchPrecision("int8").to_search(masked())
    x, y = batch()
    q.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(x, y, epochs=1, verbose=0)  # the activation ranges are learned in training
    eager = q(x, training=False).numpy()
    compiled = tf.function(lambda v: q(v, training=False), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, atol=1e-4)


def test_supermask_twin_keeps_the_kernel_frozen():
    model = supermask.to_supermask(masked(), "topk")
    q = SearchPrecision("int8").to_search(model)
    names = {v.name.split("/")[-1].split(":")[0] for v in q.trainable_weights}
    assert "kernel_scores" in names and "kernel" not in names


@pytest.mark.parametrize("kwargs", [{"weight_bits": 1}, {"activation_bits": 20}, {"gradient_bits": 8.5}])
def test_invalid_bit_widths(kwargs):
    with pytest.raises(ConfigError, match="bit width"):
        SearchPrecision("int8", **kwargs)


def test_fp32_is_the_model_itself_and_never_imports_tfmot():
    """The searches call to_search / to_fp32 at every precision; at fp32 they are the identity, and TFMOT
    (lt_keras.quantize) is loaded only when int8 is asked for."""
    import subprocess
    import sys

    code = ("import sys\nfrom lt_keras.models import build_model\nfrom lt_keras.precision import SearchPrecision\n"
            "import lt_keras, lt_keras.imp, lt_keras.supermask, lt_keras.early_bird, lt_keras.ticket\n"
            "m = build_model('lenet_300_100', (28, 28, 1), 10)\nfp32 = SearchPrecision()\n"
            "assert fp32.to_search(m) is m and fp32.to_fp32(m) is m\n"
            "print(sorted(k for k in sys.modules\n"
            "             if k.startswith(('tensorflow_model_optimization', 'lt_keras.quantize'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_model_that_is_no_twin_is_refused_by_to_fp32():
    with pytest.raises(LtKerasError, match="not a twin"):
        SearchPrecision("int8").to_fp32(masked())


def test_saving_a_twin_as_a_model_says_what_to_save_instead(tmp_path):
    twin = SearchPrecision("int8").to_search(masked())
    with pytest.raises(LtKerasError, match=r"to_fp32\(twin\)"):
        twin.save(str(tmp_path / "twin.keras"))
    assert not list(tmp_path.iterdir())
    twin.save_weights(str(tmp_path / "twin.weights.h5"))  # checkpoints still work
    SearchPrecision("int8").to_fp32(twin).save(str(tmp_path / "fp32.keras"))
