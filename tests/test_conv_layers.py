"""Conv1D and Conv3D are masked like Conv2D: the mask holds, every mode, conversion, saving, 8-bit search."""
import numpy as np
import pytest

import lt_keras
from lt_keras import Mask, mask_model, masked_layers, strip_masks, supermask
from lt_keras._keras import keras, tf
from lt_keras.imp import ImpConfig, layer_rates
from lt_keras.precision import SearchPrecision

KINDS = {  # name -> (plain layer, input shape)
    "conv1d": (lambda: keras.layers.Conv1D(4, 3, padding="causal", activation="relu", name="conv"), (12, 3)),
    "conv3d": (lambda: keras.layers.Conv3D(4, 3, padding="same", activation="relu", name="conv"), (5, 6, 6, 2)),
}


def plain_model(kind):
    layer, shape = KINDS[kind]
    inputs = keras.Input(shape)
    x = layer()(inputs)
    inner = keras.Model(inputs, x, name="block")  # nested: converted and stripped inside
    outer_in = keras.Input(shape)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(inner(outer_in)))
    return keras.Model(outer_in, outputs)


def inputs_for(kind, n=4):
    return np.random.RandomState(0).randn(n, *KINDS[kind][1]).astype(np.float32)


def random_mask(model, seed=1):
    return Mask({k: (np.random.RandomState(seed).rand(*v.shape) < 0.5).astype(np.float32)
                 for k, v in Mask.ones_like(model).items()})


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_mask_holds_and_strip_masks_gives_the_same_outputs(kind, tmp_path):
    keras.utils.set_random_seed(0)
    plain = plain_model(kind)
    model = mask_model(plain)
    conv = masked_layers(model)[0]
    assert type(conv).__name__ == f"MaskedConv{kind[-2:].upper()}" and mask_model is not None
    mask = random_mask(model)
    mask.apply_to(model)
    x = inputs_for(kind)
    conv.kernel_mask.assign(np.zeros(conv.kernel_mask.shape, np.float32))  # a write that is not apply_to
    zeroed = model(x).numpy()
    reference = keras.models.clone_model(plain)
    reference.set_weights(plain.get_weights())
    reference.get_layer("block").get_layer("conv").kernel.assign(tf.zeros_like(conv.kernel))
    out = model.get_layer("out")
    reference.get_layer("out").set_weights([out.kernel.numpy(), out.bias.numpy()])  # pruned entries stored as 0
    np.testing.assert_allclose(zeroed, reference(x).numpy(), atol=1e-5)  # no kernel reaches the output
    mask.apply_to(model)
    stripped = strip_masks(model)
    assert not masked_layers(stripped)
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-5)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    assert Mask.from_model(loaded) == mask


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_mask0_supermask_and_8bit_search(kind):
    keras.utils.set_random_seed(0)
    x, y = inputs_for(kind, 8), np.arange(8) % 3
    frozen = mask_model(plain_model(kind), mask0="freeze_init")
    random_mask(frozen).apply_to(frozen)
    conv = masked_layers(frozen)[0]
    np.testing.assert_allclose(conv.masked_kernel().numpy(), conv.kernel_frozen.numpy() * (1 - conv.kernel_mask.numpy())
                               + conv.kernel.numpy() * conv.kernel_mask.numpy(), atol=1e-6)
    for model in (supermask.to_supermask(mask_model(plain_model(kind)), "topk", keep_fraction=0.3),
                  SearchPrecision("int8").to_search(mask_model(plain_model(kind)))):
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    topk = masked_layers(supermask.to_supermask(mask_model(plain_model(kind)), "topk", keep_fraction=0.3))[0]
    assert int(topk.hard_mask().numpy().sum()) == round(0.3 * topk.kernel.shape.num_elements())


def test_imp_prunes_them_at_the_convolution_rate():
    model = mask_model(plain_model("conv1d"))
    rates = layer_rates(model, ImpConfig(prune_rate_conv=0.15, prune_rate_fc=0.2, prune_rate_output=0.05))
    assert rates == {"conv/kernel": 0.15, "out/kernel": 0.05}
    assert lt_keras.MaskedConv3D.__name__ == "MaskedConv3D"
