"""The Keras 3 bridge: a Keras 3 model through from_keras3 -> mask_model -> find_ticket -> SavedModel -> Keras 3."""
import os
import subprocess
import sys

import keras  # Keras 3, the users' Keras (the one test module that imports it; see test_import_site)
import numpy as np
import pytest

import lt_keras
from lt_keras import (ImpConfig, LtKerasError, Mask, find_ticket, from_keras3, mask_model, masked_layers,
                      strip_masks, to_keras3)
from lt_keras.export import save_saved_model
from tests.conftest import REPO


def keras3_model():
    """A Keras 3 functional model with a nested functional block, a separable conv and a concatenation."""
    keras.utils.set_random_seed(0)
    block_in = keras.Input((8, 8, 3))
    b = keras.layers.Conv2D(6, 3, padding="same", name="block_conv")(block_in)
    b = keras.layers.BatchNormalization(name="block_bn")(b)
    block = keras.Model(block_in, keras.layers.Activation("relu", name="block_relu")(b), name="block")
    inputs = keras.Input((8, 8, 3), name="image")
    x = block(inputs)
    y = keras.layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    y = keras.layers.MaxPooling2D(name="pool")(keras.layers.Concatenate(name="cat")([x, y]))
    y = keras.layers.Dropout(0.1, name="drop")(keras.layers.Flatten(name="flat")(y))
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(y), name="users_keras3")
    bn = block.get_layer("block_bn")
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 6))
    bn.gamma.assign(np.linspace(0.5, 1.5, 6))
    return model


def arrays():
    rng = np.random.RandomState(0)
    return rng.randn(64, 8, 8, 3).astype(np.float32), rng.randint(0, 5, 64)


def keras3_layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if hasattr(layer, "layers"):
            found = keras3_layer(layer, name)
            if found is not None:
                return found
    return None


def test_keras3_model_to_ticket_to_savedmodel_back_in_keras3(tmp_path):
    k3 = keras3_model()
    x, y = arrays()
    k2 = from_keras3(k3)
    assert [l.name for l in k2.layers[1:]] == ["block", "sep", "cat", "pool", "flat", "drop", "logits"]
    np.testing.assert_allclose(k2(x).numpy(), np.asarray(k3(x)), atol=1e-5)
    model = mask_model(k3)  # takes the Keras 3 model itself
    assert [l.name for l in masked_layers(model)] == ["block_conv", "sep_depthwise", "sep_pointwise", "logits"]
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), atol=1e-5)
    model.compile(lt_keras.keras.optimizers.SGD(0.0), lt_keras.keras.losses.SparseCategoricalCrossentropy(True))
    search = find_ticket(model, lambda m, callbacks: m.fit(x, y, batch_size=32, verbose=0, callbacks=callbacks),
                         ImpConfig(rounds=1))
    assert 0.85 < search.mask.density() < 0.95
    plain = strip_masks(model)
    kernels = {"block_conv": (plain.get_layer("block").get_layer("block_conv").kernel, "block_conv", "kernel"),
               "logits": (plain.get_layer("logits").kernel, "logits", "kernel"),
               "sep_depthwise": (plain.get_layer("sep").depthwise_kernel, "sep", "depthwise_kernel"),
               "sep_pointwise": (plain.get_layer("sep").pointwise_kernel, "sep", "pointwise_kernel")}
    for name, (kernel, k3_name, attribute) in kernels.items():  # learning rate 0: the Keras 3 weights where kept
        original = np.asarray(getattr(keras3_layer(k3, k3_name), attribute))
        np.testing.assert_array_equal(kernel.numpy(), original * search.mask[name + "/kernel"])
    save_saved_model(plain, str(tmp_path / "saved"))
    served = keras.layers.TFSMLayer(str(tmp_path / "saved"), call_endpoint="serving_default")
    for layer in k3.layers:  # the Keras 3 model carrying the ticket (BatchNorm statistics moved in training)
        if hasattr(layer, "layers"):
            for inner in (inner for inner in layer.layers if inner.weights):
                inner.set_weights(plain.get_layer(layer.name).get_layer(inner.name).get_weights())
        elif layer.weights:
            layer.set_weights(plain.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(np.asarray(served(x)["logits"]), np.asarray(k3(x)), atol=1e-5)


def test_a_ticket_goes_back_to_keras3_as_a_keras_file(tmp_path):
    k3 = keras3_model()
    x, _ = arrays()
    model = mask_model(k3)
    Mask({key: (np.random.RandomState(3).rand(*v.shape) < 0.5).astype(np.float32)
          for key, v in Mask.ones_like(model).items()}).apply_to(model)
    with pytest.raises(LtKerasError, match="strip_masks"):
        to_keras3(model)
    back = to_keras3(strip_masks(model))
    assert [l.name for l in back.layers[1:]] == ["block_conv", "block_bn", "block_relu", "sep", "cat", "pool", "flat",
                                                 "drop", "logits"]  # the block inlined
    back.save(str(tmp_path / "ticket.keras"))
    loaded = keras.models.load_model(str(tmp_path / "ticket.keras"))
    np.testing.assert_allclose(np.asarray(loaded(x)), model(x).numpy(), atol=1e-5)
    assert (np.asarray(loaded.get_layer("logits").kernel) == 0).mean() > 0.4


def test_from_keras3_keeps_the_initializers():
    """A reinit control or mask-1 reinit draws from the layer's initializer: the bridge must carry it over."""
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, kernel_initializer="he_normal", bias_initializer="ones", name="d")(inputs)
    x = keras.layers.Conv1D(2, 1, kernel_initializer=keras.initializers.RandomUniform(-0.3, 0.3), name="c")(
        keras.layers.Reshape((4, 1), name="r")(x))
    converted = from_keras3(keras.Model(inputs, x))
    dense, conv = converted.get_layer("d"), converted.get_layer("c")
    assert type(dense.kernel_initializer).__name__ == "HeNormal"
    assert type(dense.bias_initializer).__name__ == "Ones"
    assert type(conv.kernel_initializer).__name__ == "RandomUniform" and conv.kernel_initializer.maxval == 0.3


def test_keras3_errors_say_which_keras_and_what_to_do():
    k3 = keras3_model()
    with pytest.raises(LtKerasError, match=r"got a Keras 3 Functional \(keras 3\.[0-9.]+\); convert the model with "
                                           r"lt_keras\.from_keras3"):
        find_ticket(k3, lambda m, c: None)
    with pytest.raises(LtKerasError, match="got a Keras 3 tensor"):
        lt_keras.MaskedDense(3)(keras.Input((4,)))

    class Custom(keras.layers.Layer):
        def call(self, x):
            return x

    inputs = keras.Input((4,))
    with pytest.raises(LtKerasError, match=r"no Keras 2 twin: custom \(Custom\)"):
        from_keras3(keras.Model(inputs, keras.layers.Dense(2)(Custom(name="custom")(inputs))))
    with pytest.raises(LtKerasError, match="expected a Keras 3 model"):
        from_keras3("model.keras")


def _runs_without_legacy_keras(*lines):
    """Run ``lines`` in a fresh Python whose environment has no TF_USE_LEGACY_KERAS; they print ok at the end."""
    code = "\n".join(["import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)", *lines, "print('ok')"])
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_importing_lt_keras_leaves_tf_keras_alone():
    _runs_without_legacy_keras(
        "import lt_keras, tensorflow as tf",
        "v = tf.keras.version() if hasattr(tf.keras, 'version') else tf.keras.__version__",
        "assert v.startswith('3.'), v",
        "assert lt_keras.keras.__version__.startswith('2.'), lt_keras.keras.__version__")


def test_the_8bit_path_puts_tf_use_legacy_keras_back():
    """TFMOT sets TF_USE_LEGACY_KERAS=1 while it imports; lt_keras.quantize puts the environment back, so a child
    process started afterwards gets the user's Keras."""
    _runs_without_legacy_keras(
        "import lt_keras.quantize",
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ, os.environ.get('TF_USE_LEGACY_KERAS')")


@pytest.mark.parametrize("kind", ["conv1d", "conv3d", "depthwise", "transpose", "embedding", "einsum", "attention",
                                  "separable", "lstm", "gru"])
def test_every_masked_kind_crosses_the_bridge_both_ways(kind):
    """A Keras 3 model with the layer goes through mask_model (converted first), a random mask, strip_masks and
    to_keras3: the Keras 3 copy gives the masked model's outputs."""
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    layer, shape, x = {
        "conv1d": (keras.layers.Conv1D(4, 3, padding="causal"), (10, 3), rng.randn(4, 10, 3)),
        "conv3d": (keras.layers.Conv3D(4, 3, padding="same"), (4, 5, 5, 2), rng.randn(4, 4, 5, 5, 2)),
        "depthwise": (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (6, 6, 3),
                      rng.randn(4, 6, 6, 3)),
        "transpose": (keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"), (5, 5, 3),
                      rng.randn(4, 5, 5, 3)),
        "embedding": (keras.layers.Embedding(20, 4), (6,), rng.randint(0, 20, (4, 6))),
        "einsum": (keras.layers.EinsumDense("abc,cd->abd", output_shape=(5, 4), bias_axes="d"), (5, 3),
                   rng.randn(4, 5, 3)),
        "attention": (lambda t, mha=keras.layers.MultiHeadAttention(2, 4): mha(t, t), (5, 3), rng.randn(4, 5, 3)),
        "separable": (keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, padding="same"), (6, 6, 3),
                      rng.randn(4, 6, 6, 3)),
        "lstm": (keras.layers.LSTM(4, return_sequences=True), (5, 3), rng.randn(4, 5, 3)),
        "gru": (keras.layers.GRU(4, return_sequences=True), (5, 3), rng.randn(4, 5, 3)),
    }[kind]
    x = x.astype(np.int32 if kind == "embedding" else np.float32)
    inputs = keras.Input(shape, dtype="int32" if kind == "embedding" else "float32")
    k3 = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(layer(inputs))))
    model = mask_model(k3)
    assert len(masked_layers(model)) == {"attention": 5, "separable": 3, "lstm": 3, "gru": 3}.get(kind, 2)  # parts
    np.testing.assert_allclose(model(x).numpy(), np.asarray(k3(x)), atol=1e-5)
    Mask({k: (rng.rand(*v.shape) < 0.5).astype(np.float32) for k, v in Mask.ones_like(model).items()}).apply_to(model)
    back = to_keras3(strip_masks(model))
    np.testing.assert_allclose(np.asarray(back(x)), model(x).numpy(), atol=1e-5)
