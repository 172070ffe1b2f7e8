"""Every masked layer kind beyond Dense / Conv2D (Conv1D, Conv3D, DepthwiseConv2D, Conv2DTranspose, Embedding):
the mask holds through writes and optimizer steps, every mode, conversion, saving, the 8-bit search."""
import numpy as np
import pytest

import lt_keras
from lt_keras import Mask, mask_model, masked_layers, strip_masks, supermask
from lt_keras._keras import keras, tf
from lt_keras.imp import ImpConfig, layer_rates
from lt_keras.precision import SearchPrecision

KINDS = {  # name -> (plain layer, input shape, masked class)
    "conv1d": (lambda: keras.layers.Conv1D(4, 3, padding="causal", activation="relu", name="conv"), (12, 3),
               "MaskedConv1D"),
    "conv3d": (lambda: keras.layers.Conv3D(4, 3, padding="same", activation="relu", name="conv"), (5, 6, 6, 2),
               "MaskedConv3D"),
    "depthwise": (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu",
                                                       name="conv"), (6, 6, 3), "MaskedDepthwiseConv2D"),
    "transpose": (lambda: keras.layers.Conv2DTranspose(4, 3, strides=2, output_padding=1, activation="relu",
                                                       name="conv"), (5, 5, 3), "MaskedConv2DTranspose"),
    "embedding": (lambda: keras.layers.Embedding(20, 4, name="conv"), (6,), "MaskedEmbedding"),
    "einsum": (lambda: keras.layers.EinsumDense("abc,cd->abd", output_shape=(5, 4), bias_axes="d", activation="relu",
                                                name="conv"), (5, 3), "MaskedEinsumDense"),
}
REFUSED_AT_8_BITS = {"embedding": "Embedding layers", "einsum": "EinsumDense layers or attention"}


def plain_model(kind):
    layer, shape, _ = KINDS[kind]
    dtype = "int32" if kind == "embedding" else "float32"
    inputs = keras.Input(shape, dtype=dtype)
    x = layer()(inputs)
    inner = keras.Model(inputs, x, name="block")  # nested: converted and stripped inside
    outer_in = keras.Input(shape, dtype=dtype)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(inner(outer_in)))
    return keras.Model(outer_in, outputs)


def inputs_for(kind, n=4):
    rng = np.random.RandomState(0)
    if kind == "embedding":
        return rng.randint(0, 20, (n, *KINDS[kind][1])).astype(np.int32)
    return rng.randn(n, *KINDS[kind][1]).astype(np.float32)


def random_mask(model, seed=1):
    return Mask({k: (np.random.RandomState(seed).rand(*v.shape) < 0.5).astype(np.float32)
                 for k, v in Mask.ones_like(model).items()})


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_mask_holds_and_strip_masks_gives_the_same_outputs(kind, tmp_path):
    keras.utils.set_random_seed(0)
    plain = plain_model(kind)
    model = mask_model(plain)
    conv = masked_layers(model)[0]
    assert type(conv).__name__ == KINDS[kind][2]
    mask = random_mask(model)
    mask.apply_to(model)
    x = inputs_for(kind)
    conv.kernel_mask.assign(np.zeros(conv.kernel_mask.shape, np.float32))  # a write that is not apply_to
    zeroed = model(x).numpy()
    reference = keras.models.clone_model(plain)
    reference.set_weights(plain.get_weights())
    getattr(reference.get_layer("block").get_layer("conv"), conv.KERNEL).assign(tf.zeros_like(conv.kernel))
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
    if kind in REFUSED_AT_8_BITS:  # TFMOT quantizes neither (and would fake-quantize an Embedding's integer ids)
        with pytest.raises(lt_keras.LtKerasError, match=f"8-bit search does not take {REFUSED_AT_8_BITS[kind]}"):
            SearchPrecision("int8").to_search(mask_model(plain_model(kind)))
    searches = [] if kind in REFUSED_AT_8_BITS else [SearchPrecision("int8").to_search(mask_model(plain_model(kind)))]
    for model in (supermask.to_supermask(mask_model(plain_model(kind)), "topk", keep_fraction=0.3), *searches):
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


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pruned_weights_stay_exactly_zero_through_training_steps(kind, optimizer):
    keras.utils.set_random_seed(0)
    model = mask_model(plain_model(kind))
    mask = random_mask(model)
    mask.apply_to(model)
    model.compile(keras.optimizers.Adam(0.05) if optimizer == "adam" else keras.optimizers.SGD(0.5, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    layer = masked_layers(model)[0]
    before = layer.kernel.numpy().copy()
    model.fit(inputs_for(kind, 16), np.arange(16) % 3, epochs=5, batch_size=4, verbose=0)
    kernel, pruned = layer.kernel.numpy(), mask["conv/kernel"] == 0
    assert np.all(kernel[pruned] == 0) and pruned.any()
    assert not np.allclose(kernel[~pruned], before[~pruned])  # the kept weights trained


def test_each_kind_counts_its_outputs_and_flops():
    """IMP's floor (one weight per output) and the FLOP count follow each kernel's layout."""
    from lt_keras.flops import forward_flops_per_example
    from lt_keras.imp import min_kept

    counted = {}
    for kind in ("depthwise", "transpose", "embedding"):
        model = mask_model(plain_model(kind))
        layer = masked_layers(model)[0]
        counted[kind] = (min_kept(layer), forward_flops_per_example(model.get_layer("block")))
    # depthwise 3x3, 3 channels x 2 on 6x6: 36 positions x 6 outputs x 9 taps x 2, + 216 biases (a fused
    # activation is not counted, as for every layer)
    assert counted["depthwise"] == (6, 2 * 216 * 9 + 216)
    # transpose 3x3, 3 -> 4 channels, stride 2 on 5x5 (output 12x12x4): 25 input positions x 108 weights x 2
    assert counted["transpose"] == (4, 2 * 25 * 108 + 576)
    assert counted["embedding"] == (4, 0)


@pytest.mark.slow
@pytest.mark.parametrize("application", ["MobileNetV2", "ResNet50"])
def test_keras_applications_go_from_mask_model_through_imp_to_a_saved_model(application, tmp_path):
    """Every kernel of the applications is masked (MobileNetV2's depthwise ones too), two IMP rounds around the
    user's own fit keep their masks, and the stripped SavedModel computes the ticket's outputs."""
    keras.utils.set_random_seed(0)
    plain = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3), classes=10)
    kernels = sum(w.shape.num_elements() for l in plain.layers for w in l.trainable_weights if len(w.shape) >= 2)
    model = mask_model(plain)
    assert sum(l.kernel.shape.num_elements() for l in masked_layers(model)) == kernels
    assert any(type(l).__name__ == "MaskedDepthwiseConv2D" for l in masked_layers(model)) == (application ==
                                                                                               "MobileNetV2")
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.RandomState(0)
    x, y = rng.rand(16, 32, 32, 3).astype(np.float32), rng.randint(0, 10, 16)
    search = lt_keras.find_ticket(model, lambda m, cbs: m.fit(x, y, batch_size=8, epochs=1, callbacks=cbs, verbose=0),
                                  ImpConfig(rounds=2))
    assert search.mask.density() < 0.85 and Mask.from_model(model) == search.mask
    stripped = strip_masks(model)
    stripped.save(str(tmp_path / "saved"), save_format="tf")
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served(x[:4], training=False).numpy(), model(x[:4], training=False).numpy(), atol=1e-4)


def separable_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", activation="relu", name="sep")(inputs)
    inner = keras.Model(inputs, x, name="block")
    outer_in = keras.Input((8, 8, 3))
    return keras.Model(outer_in, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(inner(outer_in))))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_separable_convolution_is_two_masked_kernels_and_strips_back_to_one_layer(optimizer, tmp_path):
    keras.utils.set_random_seed(0)
    plain = separable_model()
    x = np.random.RandomState(0).randn(16, 8, 8, 3).astype(np.float32)
    model = mask_model(plain)
    np.testing.assert_allclose(model(x).numpy(), plain(x).numpy(), atol=1e-5)  # same computation, two layers
    assert [(type(l).__name__, l.name) for l in masked_layers(model)] == [
        ("MaskedDepthwiseConv2D", "sep_depthwise"), ("MaskedConv2D", "sep_pointwise"), ("MaskedDense", "out")]
    mask = random_mask(model)
    mask.apply_to(model)
    model.compile(keras.optimizers.Adam(0.05) if optimizer == "adam" else keras.optimizers.SGD(0.5, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(16) % 3, epochs=3, batch_size=4, verbose=0)
    for key in ("sep_depthwise/kernel", "sep_pointwise/kernel"):
        layer = model.get_layer("block").get_layer("sep").depthwise if "depthwise" in key else \
            model.get_layer("block").get_layer("sep").pointwise
        assert np.all(layer.kernel.numpy()[mask[key] == 0] == 0) and (mask[key] == 0).any()
    stripped = strip_masks(model)
    sep = stripped.get_layer("block").get_layer("sep")
    assert type(sep) is keras.layers.SeparableConv2D and not masked_layers(stripped)
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-5)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert Mask.from_model(loaded) == mask
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_a_separable_convolution_takes_mask0_and_supermasks_and_is_refused_at_8_bits():
    keras.utils.set_random_seed(0)
    frozen = mask_model(separable_model(), mask0="freeze_init")
    random_mask(frozen).apply_to(frozen)
    pointwise = masked_layers(frozen)[1]
    np.testing.assert_allclose(pointwise.masked_kernel().numpy(), pointwise.kernel_frozen.numpy() * (
        1 - pointwise.kernel_mask.numpy()) + pointwise.kernel.numpy() * pointwise.kernel_mask.numpy(), atol=1e-6)
    topk = mask_model(separable_model(), mask_mode="topk", keep_fraction=0.3)
    depthwise = masked_layers(topk)[0]
    assert depthwise.kernel_scores.trainable and not depthwise.kernel.trainable
    assert int(depthwise.hard_mask().numpy().sum()) == round(0.3 * depthwise.kernel.shape.num_elements())
    from lt_keras.flops import forward_flops_per_example

    # 64 positions x (3x3x3x2 depthwise + 6x5 pointwise) x 2 + 320 biases, then Dense 320 -> 3
    assert forward_flops_per_example(separable_model()) == forward_flops_per_example(topk) == 2 * 64 * 84 + 320 + 1923
    with pytest.raises(lt_keras.LtKerasError, match=r"separable or recurrent layers \(sep\)"):
        SearchPrecision("int8").to_search(mask_model(separable_model()))


def recurrent_model(kind):
    inputs = keras.Input((7, 5))
    x = getattr(keras.layers, kind)(6, return_sequences=True, name="rnn1")(inputs)
    x = getattr(keras.layers, kind)(4, name="rnn2")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
def test_recurrent_kernels_are_masked_where_the_layer_computes(kind, tmp_path):
    """Both kernels of every recurrent layer are masked layers of their own; the layer (its fused kernels
    included) computes with them masked, trains them with pruned entries at exactly zero, saves and strips."""
    keras.utils.set_random_seed(0)
    plain = recurrent_model(kind)
    x = np.random.RandomState(0).randn(16, 7, 5).astype(np.float32)
    model = mask_model(plain)
    assert [l.name for l in masked_layers(model)] == ["rnn1_kernel", "rnn1_recurrent_kernel", "rnn2_kernel",
                                                      "rnn2_recurrent_kernel", "out"]
    np.testing.assert_allclose(model(x).numpy(), plain(x).numpy(), atol=1e-6)
    recurrent = model.get_layer("rnn2").cell._recurrent_kernel_part
    recurrent.kernel_mask.assign(np.zeros(recurrent.kernel_mask.shape, np.float32))  # a write, not apply_to
    reference = keras.models.clone_model(plain)
    reference.set_weights(plain.get_weights())
    reference.get_layer("rnn2").cell.recurrent_kernel.assign(np.zeros(recurrent.kernel.shape, np.float32))
    np.testing.assert_allclose(model(x).numpy(), reference(x).numpy(), atol=1e-6)
    for optimizer in (keras.optimizers.Adam(0.05), keras.optimizers.SGD(0.5, momentum=0.9)):
        mask = random_mask(model)
        mask.apply_to(model)
        before = {l.name: l.kernel.numpy().copy() for l in masked_layers(model)}
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, np.arange(16) % 3, epochs=3, batch_size=4, verbose=0)
        for layer in masked_layers(model):
            pruned = mask[layer.name + "/kernel"] == 0
            assert np.all(layer.kernel.numpy()[pruned] == 0) and pruned.any()
            assert not np.allclose(layer.kernel.numpy()[~pruned], before[layer.name][~pruned])
    stripped = strip_masks(model)
    assert type(stripped.get_layer("rnn1")) is getattr(keras.layers, kind) and not masked_layers(stripped)
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-5)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert Mask.from_model(loaded) == mask
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_recurrent_layers_take_mask0_and_topk_and_refuse_bernoulli_and_8_bits():
    keras.utils.set_random_seed(0)
    x, y = np.random.RandomState(0).randn(8, 7, 5).astype(np.float32), np.arange(8) % 3
    frozen = mask_model(recurrent_model("LSTM"), mask0="freeze_init")
    random_mask(frozen).apply_to(frozen)
    part = masked_layers(frozen)[1]
    np.testing.assert_allclose(part.masked_kernel().numpy(), part.kernel_frozen.numpy() * (
        1 - part.kernel_mask.numpy()) + part.kernel.numpy() * part.kernel_mask.numpy(), atol=1e-6)
    topk = mask_model(recurrent_model("GRU"), mask_mode="topk", keep_fraction=0.3)
    part = masked_layers(topk)[1]  # the recurrent kernel, beside the bias
    assert part.kernel_scores.trainable and not part.kernel.trainable and not part.bias.trainable
    before = part.kernel_scores.numpy().copy()
    topk.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    topk.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert not np.allclose(part.kernel_scores.numpy(), before)
    assert int(part.hard_mask().numpy().sum()) == round(0.3 * part.kernel.shape.num_elements())
    with pytest.raises(lt_keras.LtKerasError, match="not Bernoulli supermasks"):
        mask_model(recurrent_model("SimpleRNN"), mask_mode="bernoulli")
    with pytest.raises(lt_keras.LtKerasError, match=r"separable or recurrent layers \(rnn1, rnn2\)"):
        SearchPrecision("int8").to_search(mask_model(recurrent_model("LSTM")))
