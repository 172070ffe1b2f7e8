"""mask_model / strip_masks / masked_layers on users' own models."""
import numpy as np
import pytest

from lt_keras import LtKerasError, Mask, mask_model, masked_layers, strip_masks
from lt_keras._keras import keras
from lt_keras.layers import is_masked


def user_model():
    """A functional model with a nested Sequential, BatchNorm and a non-masked layer."""
    inputs = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    head = keras.Sequential(
        [keras.layers.Dense(8, activation="relu", name="h1", input_shape=(4,)), keras.layers.Dropout(0.1, name="drop"),
         keras.layers.Dense(3, name="h2")],
        name="head",
    )
    return keras.Model(inputs, head(x), name="user")


def x_batch():
    return np.random.RandomState(0).randn(5, 10, 10, 2).astype(np.float32)


def test_mask_model_keeps_outputs_and_structure():
    model = user_model()
    x = x_batch()
    masked = mask_model(model)
    assert [l.name for l in masked_layers(masked)] == ["c1", "h1", "h2"]
    assert all(is_masked(l) for l in masked_layers(masked))
    np.testing.assert_array_equal(masked(x).numpy(), model(x).numpy())
    assert Mask.from_model(masked).density() == 1.0
    assert not any(is_masked(l) for l in model.layers)  # the original is left alone


def test_strip_masks_with_all_ones_reproduces_original():
    model = user_model()
    x = x_batch()
    stripped = strip_masks(mask_model(model))
    assert not masked_layers(stripped)
    assert type(stripped.get_layer("head").get_layer("h1")) is keras.layers.Dense
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-6)


def test_strip_masks_bakes_zeros_in():
    masked = mask_model(user_model())
    rng = np.random.RandomState(3)
    mask = Mask({k: rng.rand(*v.shape) < 0.4 for k, v in Mask.from_model(masked).items()})
    mask.apply_to(masked)
    stripped = strip_masks(masked)
    x = x_batch()
    np.testing.assert_allclose(stripped(x).numpy(), masked(x).numpy(), atol=1e-6)
    kernel = stripped.get_layer("c1").kernel.numpy()
    np.testing.assert_array_equal(kernel == 0, mask["c1/kernel"] == 0)


def test_sequential_model():
    model = keras.Sequential([keras.layers.Dense(4, input_shape=(3,), name="a"), keras.layers.Dense(2, name="b")])
    masked = mask_model(model)
    assert isinstance(masked, keras.Sequential) and len(masked_layers(masked)) == 2
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(masked(x).numpy(), model(x).numpy())


def test_subclassed_model_is_refused_with_advice():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    model = Sub()
    model(np.ones((1, 3), np.float32))
    with pytest.raises(LtKerasError, match="subclassed"):
        mask_model(model)


def test_duplicate_layer_names_are_refused():
    inner = keras.Sequential([keras.layers.Dense(2, name="same", input_shape=(2,))], name="inner")
    inputs = keras.Input((2,))
    x = keras.layers.Dense(2, name="same")(inputs)
    model = keras.Model(inputs, inner(x))
    with pytest.raises(LtKerasError, match="unique name"):
        masked_layers(mask_model(model))


def test_mask_model_reports_what_stays_dense_and_refuses_a_model_with_nothing_to_mask(caplog):
    import logging

    from lt_keras import mask_model

    series = keras.Input((6, 3))
    wrapped_only = keras.Model(series, keras.layers.Bidirectional(keras.layers.LSTM(4), name="bilstm_only")(series))
    with pytest.raises(LtKerasError, match=r"no layer lt_keras can mask.*bilstm_only \(Bidirectional\)"):
        mask_model(wrapped_only)
    inputs = keras.Input((6,), dtype="int32")
    wrapped = keras.layers.Bidirectional(keras.layers.LSTM(4), name="bilstm")
    h = wrapped(keras.layers.Embedding(20, 8, name="embed")(inputs))
    mixed = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    with caplog.at_level(logging.INFO, logger="absl"):
        masked = mask_model(mixed)
    assert [l.name for l in masked_layers(masked)] == ["embed", "head"]
    text = caplog.text
    assert "stay dense: bilstm (Bidirectional)" in text and "2 of 3 weight layers masked" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert rows == [["embed", "MaskedEmbedding", "masked", "160"], ["bilstm", "Bidirectional", "dense", "384"],
                    ["head", "MaskedDense", "masked", "24"]]  # the table: name, type, status, weights
