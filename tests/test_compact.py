"""Compaction removes dead units and channels and computes the masked model's outputs (inference mode)."""
import numpy as np
import pytest

from lt_keras import compact, compaction_summary, mask_model, masked_layers
from lt_keras._keras import keras
from lt_keras.errors import LtKerasError
from lt_keras.models import build_model

TOLERANCE = 1e-5


def _mobilenet_v2():
    return mask_model(keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10,
                                                     classifier_activation=None))


# name -> (masked model, input shape, the layer whose channel 0 gets no live inputs, layers that stop reading
# channel 0 of their input so that the constant reaches a bias that can absorb it)
TICKETS = {
    "lenet": (lambda: build_model("lenet_300_100", (28, 28, 1), 10), (28, 28, 1), "fc1", ()),
    "conv4": (lambda: build_model("conv4", (32, 32, 3), 10), (32, 32, 3), "conv4", ()),
    "vgg_bn": (lambda: build_model("vgg11_bn_quarter", (32, 32, 3), 10), (32, 32, 3), "conv8", ()),
    # a stage-3 residual channel: constant only when every block's branch into it is dead and no 3x3 reads it
    "resnet20": (lambda: build_model("resnet20", (32, 32, 3), 10), (32, 32, 3),
                 ("stage3_block1_shortcut", "stage3_block1_conv2", "stage3_block2_conv2", "stage3_block3_conv2"),
                 ("stage3_block2_conv1", "stage3_block3_conv1")),
    "mobilenet_v2": (_mobilenet_v2, (32, 32, 3), "Conv_1", ()),
}


def _random_masks(model, rng, dead=0.0):
    """Masks of density ~0.5; with ``dead``, that fraction of units gets no live inputs and of input channels
    no reads. Biases and BatchNorm statistics are made nonzero, so dead units emit nonzero constants."""
    for layer in masked_layers(model):
        mask = (rng.rand(*layer.kernel_mask.shape) < 0.5).astype(np.float32)
        mask[..., rng.rand(mask.shape[-1]) < dead] = 0
        if mask.ndim >= 2 and dead:
            mask[..., rng.rand(mask.shape[-2]) < dead, :] = 0
        layer.kernel_mask.assign(mask)
        if layer.use_bias:
            layer.bias.assign(rng.randn(*layer.bias.shape).astype(np.float32))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(rng.randn(*layer.beta.shape).astype(np.float32))
            layer.moving_mean.assign(rng.randn(*layer.beta.shape).astype(np.float32))
            layer.moving_variance.assign(rng.rand(*layer.beta.shape).astype(np.float32) + 0.5)


def _constant_unit(model, dead_inputs, unread_by):
    """Channel 0 of ``dead_inputs`` layers: no live inputs and a constant 1 after the bias or BatchNorm."""
    for name in (dead_inputs,) if isinstance(dead_inputs, str) else dead_inputs:
        layer = model.get_layer(name)
        mask = layer.kernel_mask.numpy()
        mask[..., 0] = 0
        layer.kernel_mask.assign(mask)
        if layer.use_bias:
            layer.bias.assign(np.where(np.arange(layer.bias.shape[0]) == 0, 1.0, layer.bias.numpy()))
        consumer = layer.outbound_nodes[0].outbound_layer
        if isinstance(consumer, keras.layers.BatchNormalization):
            for variable, value in ((consumer.beta, 1.0), (consumer.moving_mean, 0.0)):
                variable.assign(np.where(np.arange(variable.shape[0]) == 0, value, variable.numpy()))
    for name in unread_by:
        layer = model.get_layer(name)
        mask = layer.kernel_mask.numpy()
        mask[..., 0, :] = 0
        layer.kernel_mask.assign(mask)


def _max_diff(model, compacted, shape):
    x = np.random.RandomState(1).rand(8, *shape).astype(np.float32)
    return float(np.abs(model(x, training=False).numpy() - compacted(x, training=False).numpy()).max())


@pytest.mark.parametrize("name", sorted(TICKETS))
def test_compact_equals_the_ticket_with_dead_units_everywhere(name):
    build, shape, _, _ = TICKETS[name]
    model = build()
    _random_masks(model, np.random.RandomState(0), dead=0.3)
    compacted = compact(model)
    assert _max_diff(model, compacted, shape) <= TOLERANCE
    assert compacted.count_params() < 0.6 * model.count_params()
    assert compacted.output_shape == model.output_shape
    assert compaction_summary(model, compacted)


@pytest.mark.parametrize("name", sorted(TICKETS))
def test_a_unit_with_no_live_inputs_is_removed_and_its_constant_folded(name):
    """The unit's constant (1 after its bias or BatchNorm, through ReLU) reaches a bias that absorbs it: the unit
    goes, and the outputs stay the same only because the constant was folded."""
    build, shape, dead_inputs, unread_by = TICKETS[name]
    model = build()
    _random_masks(model, np.random.RandomState(0))
    _constant_unit(model, dead_inputs, unread_by)
    compacted = compact(model)
    assert _max_diff(model, compacted, shape) <= TOLERANCE
    for name in (dead_inputs,) if isinstance(dead_inputs, str) else dead_inputs:
        kernel = compacted.get_layer(name).kernel.numpy()
        assert (kernel != 0).reshape(-1, kernel.shape[-1]).any(axis=0).all(), f"{name}'s dead unit is still there"


def _zoo():
    """Concatenation, depthwise convolution with a multiplier, zero padding, an unpadded convolution, a
    transposed convolution, a merge by product, a nested block, and layers compaction must not narrow:
    LayerNormalization's input and a softmax Dense's outputs."""
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="valid", activation="relu", name="stem")(inputs)
    a = keras.layers.Conv2D(6, 1, name="branch_a")(x)
    b = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu", name="branch_b")(x)
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = keras.layers.BatchNormalization(name="bn")(x)
    block_in = keras.Input(x.shape[1:])
    y = keras.layers.ZeroPadding2D(1, name="pad")(block_in)
    y = keras.layers.Conv2D(12, 3, padding="valid", activation="relu", name="inner")(y)
    x = keras.Model(block_in, y, name="block")(x)
    gate = keras.layers.Conv2D(12, 1, activation="sigmoid", name="gate")(x)
    x = keras.layers.Multiply(name="gated")([x, gate])
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, activation="relu", name="up")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Dense(8, activation="softmax", name="attention_like")(x)
    return mask_model(keras.Model(inputs, keras.layers.Dense(4, name="out")(x)))


def test_compact_keeps_what_it_cannot_remove_exactly_on_a_graph_of_many_layer_kinds():
    keras.utils.set_random_seed(0)
    model = _zoo()
    _random_masks(model, np.random.RandomState(0), dead=0.3)
    compacted = compact(model)
    assert _max_diff(model, compacted, (10, 10, 3)) <= TOLERANCE
    summary = compaction_summary(model, compacted)
    assert not {"fc", "ln", "attention_like", "out"} & set(summary)  # LayerNorm's input, softmax, the output
    width = {name: compacted.get_layer(name).output_shape[-1] for name in ("branch_a", "branch_b", "concat", "up")}
    assert width["concat"] == width["branch_a"] + width["branch_b"] < 22
    assert summary["bn"] == summary["pad"] == summary["concat"] and width["up"] < 8


def test_an_embedding_and_a_causal_convolution_compact():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(30, 12, name="embed")(inputs)
    x = keras.layers.Conv1D(10, 3, padding="causal", activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = mask_model(keras.Model(inputs, keras.layers.Dense(3, name="out")(x)))
    _random_masks(model, np.random.RandomState(2), dead=0.3)
    compacted = compact(model)
    ids = np.random.RandomState(0).randint(0, 30, (8, 7)).astype(np.int32)
    np.testing.assert_allclose(compacted(ids).numpy(), model(ids, training=False).numpy(), atol=TOLERANCE)
    assert set(compaction_summary(model, compacted)) >= {"embed", "conv"}


def test_a_layer_whose_every_unit_is_dead_keeps_one():
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    layer = model.get_layer("fc2")
    layer.kernel_mask.assign(np.zeros(layer.kernel_mask.shape, np.float32))
    compacted = compact(model)
    assert compacted.get_layer("fc2").units == 1 and compacted.get_layer("fc1").units == 1
    assert _max_diff(model, compacted, (28, 28, 1)) <= TOLERANCE


def test_compact_refuses_a_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(3)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(LtKerasError, match="subclassed"):
        compact(net)


def test_a_layer_reading_tensors_by_keyword_keeps_their_channels():
    """Attention called as ``mha(query=x, value=y)``: x and y are read even though no positional argument names
    them; their channels stay although their own readers would let them go."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 5))
    x = keras.layers.Dense(8, activation="relu", name="q")(inputs)
    y = keras.layers.Dense(8, activation="relu", name="v")(inputs)
    a = keras.layers.MultiHeadAttention(2, 4, name="attention")(query=x, value=y)
    out = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(a))
    model = mask_model(keras.Model(inputs, out))
    for name in ("q", "v"):  # half their units get no live inputs: constants only attention reads
        layer = model.get_layer(name)
        mask = np.ones(layer.kernel_mask.shape, np.float32)
        mask[:, :4] = 0
        layer.kernel_mask.assign(mask)
        layer.bias.assign(np.ones(8, np.float32))
    compacted = compact(model)
    assert compacted.get_layer("q").units == 8 and compacted.get_layer("v").units == 8
    assert _max_diff(model, compacted, (6, 5)) <= TOLERANCE
