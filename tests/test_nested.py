"""Users' models with nested blocks: flattening, export, the 8-bit twin and Early-Bird prunability."""
import os

import numpy as np
import pytest

from lt_keras import LtKerasError, Mask, mask_model, masked_layers
from lt_keras import early_bird as eb
from lt_keras._keras import keras
from lt_keras.convert import flatten_model
from lt_keras.export import export_ticket
from lt_keras.precision import SearchPrecision


def nested_model():
    """conv -> BN -> ReLU inside a functional block, a Sequential block, then global pool -> Dropout -> Dense."""
    block_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(6, 3, padding="same", name="inner_conv")(block_in)
    y = keras.layers.BatchNormalization(name="inner_bn")(y)
    block = keras.Model(block_in, keras.layers.ReLU(name="inner_relu")(y), name="block")
    seq = keras.Sequential([keras.layers.Conv2D(5, 3, name="seq_conv", input_shape=(8, 8, 6)),
                            keras.layers.BatchNormalization(name="seq_bn")], name="seq")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(seq(block(inputs)))
    x = keras.layers.Dropout(0.2, name="drop")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="user")
    rng = np.random.RandomState(0)
    for bn in (model.get_layer("block").get_layer("inner_bn"), model.get_layer("seq").get_layer("seq_bn")):
        bn.gamma.assign(rng.uniform(0.1, 1.0, bn.gamma.shape))
        bn.beta.assign(rng.uniform(-0.5, 0.5, bn.beta.shape))
    return model


def x_batch():
    return np.random.RandomState(1).randn(4, 8, 8, 3).astype(np.float32)


def pruned(model, density=0.5):
    mask = Mask({key: (np.random.RandomState(2).rand(*value.shape) < density).astype(np.float32)
                 for key, value in Mask.ones_like(model).items()})
    mask.apply_to(model)
    return model


def test_flatten_inlines_every_block_with_the_same_outputs_and_own_weights():
    model = nested_model()
    flat = flatten_model(model)
    assert [l.name for l in flat.layers[1:]] == ["inner_conv", "inner_bn", "inner_relu", "seq_conv", "seq_bn", "gap",
                                                 "drop", "out"]
    np.testing.assert_array_equal(flat(x_batch()).numpy(), model(x_batch()).numpy())
    flat.get_layer("out").kernel.assign(flat.get_layer("out").kernel * 0)  # a copy: the original is untouched
    assert np.abs(model.get_layer("out").kernel.numpy()).sum() > 0
    assert flatten_model(flat) is flat


def test_flatten_keeps_a_block_called_twice_shared():
    block_in = keras.Input((4,))
    block = keras.Model(block_in, keras.layers.Dense(4, name="shared")(block_in), name="block")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(block(block(inputs))))
    flat = flatten_model(model)
    assert len(flat.weights) == len(model.weights) == 4
    x = np.random.RandomState(0).randn(3, 4).astype(np.float32)
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-6)


def test_flatten_names_colliding_layers():
    def block(name):
        block_in = keras.Input((4,))
        return keras.Model(block_in, keras.layers.Dense(4, name="same")(block_in), name=name)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, block("b2")(block("b1")(inputs)))
    with pytest.raises(LtKerasError, match="unique name"):
        flatten_model(model)


def test_export_of_a_nested_ticket_matches_and_a_failure_leaves_nothing(tmp_path):
    model = pruned(mask_model(nested_model()))
    x = x_batch()
    report = export_ticket(model, str(tmp_path / "saved"), x, tolerance=1e-5)
    assert report["max_abs_diff_saved_model"] <= 1e-5
    assert set(report["layer_sparsity"]) == {"inner_conv", "seq_conv", "out"}
    assert all(0.3 < s < 0.7 for s in report["layer_sparsity"].values())
    with pytest.raises(LtKerasError, match="nothing was written"):
        export_ticket(model, str(tmp_path / "refused"), x, tolerance=-1.0)
    assert sorted(os.listdir(tmp_path)) == ["saved"]


def test_int8_twin_of_a_nested_model_is_flat_and_comes_back_nested():
    model = pruned(mask_model(nested_model()))
    precision = SearchPrecision("int8")
    twin = precision.to_search(model)
    assert not any(isinstance(l, keras.Model) for l in twin.layers)
    assert np.isfinite(twin(x_batch()).numpy()).all()
    back = precision.to_fp32(twin)
    assert [l.name for l in back.layers[1:]] == ["block", "seq", "gap", "drop", "out"]
    np.testing.assert_array_equal(back(x_batch()).numpy(), model(x_batch()).numpy())
    assert Mask.from_model(back) == Mask.from_model(model)


def test_early_bird_prunes_through_nested_blocks_and_global_pool_dropout_dense():
    model = nested_model()
    assert eb.bn_prunability(model) == {"inner_bn": None, "seq_bn": None}
    assert [bn.name for bn in eb.prunable_bns(model)] == ["inner_bn", "seq_bn"]
    assert eb.prunable_bns(model)[0] is model.get_layer("block").get_layer("inner_bn")  # the user's own layer
    mask = eb.channel_mask(model, 0.5)
    slimmed = eb.slim(model, mask)
    kept = {key: int(values.sum()) for key, values in mask.items()}
    assert 0 < sum(kept.values()) < 11
    assert slimmed.get_layer("inner_conv").filters == kept["inner_bn/gamma"]
    assert slimmed.get_layer("seq_conv").filters == kept["seq_bn/gamma"]
    np.testing.assert_allclose(slimmed(x_batch()).numpy(), eb.channel_masked(model, mask)(x_batch()).numpy(),
                               atol=1e-5)


def test_early_bird_callback_reads_a_nested_graph_once_per_fit(monkeypatch):
    """Reading a nested model's graph clones it: the callback does it at train begin, not every epoch."""
    calls, read = [], eb.bn_prunability
    monkeypatch.setattr(eb, "bn_prunability", lambda model: calls.append(model.name) or read(model))
    model = nested_model()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = eb.EarlyBirdCallback(ratios=(0.5,), queue_length=2, epsilon=0.0, stop_at_eb=False, verbose=0)
    x, y = np.random.RandomState(3).randn(8, 8, 8, 3).astype(np.float32), np.arange(8) % 3
    model.fit(x, y, epochs=4, batch_size=4, verbose=0, callbacks=[callback])
    assert calls == ["user"]
    assert len(callback.history[0.5]) == 5 and set(callback.history[0.5][0]) == {"inner_bn/gamma", "seq_bn/gamma"}
    assert callback.epochs == [0, 1, 2, 3, 4]  # the mask at initialization, then one per epoch


def test_early_bird_says_why_a_batchnorm_is_not_prunable():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.BatchNormalization(name="bn_res")(keras.layers.Conv2D(3, 3, padding="same", name="c")(inputs))
    x = keras.layers.Add(name="add")([a, inputs])
    x = keras.layers.BatchNormalization(name="bn_no_conv")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    reasons = eb.bn_prunability(model)
    assert "'add' (Add)" in reasons["bn_res"] and "does not follow a Conv2D" in reasons["bn_no_conv"]
    with pytest.raises(LtKerasError, match="bn_res: its channels reach 'add'"):
        eb.add_bn_l1(model, 1e-4)


def test_a_nested_ticket_is_found_retrained_and_keeps_its_zeros(tmp_path):
    """find_ticket on a model with nested blocks writes tickets that lt-retrain's call retrains at fp32."""
    from lt_keras import ImpConfig, find_ticket
    from lt_keras.data import DataConfig
    from lt_keras.methods.retrain import retrain
    from lt_keras.training import TrainConfig

    data = DataConfig(max_train_examples=300).load()
    block_in = keras.Input((28, 28, 1))
    b = keras.layers.Conv2D(4, 3, name="blk_conv")(block_in)
    b = keras.layers.BatchNormalization(name="blk_bn")(b)
    block = keras.Model(block_in, keras.layers.ReLU(name="blk_relu")(b), name="block")
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(block(inputs))
    model = mask_model(keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="nested_user"))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    find_ticket(model, lambda m, cbs: m.fit(data.x_train, data.y_train, batch_size=60, verbose=0, callbacks=cbs),
                ImpConfig(rounds=1, prune_rate_conv=0.5, prune_rate_output=0.5), output_dir=str(tmp_path / "imp"))
    summary = retrain(str(tmp_path / "retrained"), str(tmp_path / "imp" / "round_1" / "ticket"), data,
                      TrainConfig(train_steps=10, eval_every=5, batch_size=60, jit_compile=False))
    assert summary["pruned_weights_nonzero"] == 0 and summary["method"] == "imp"
    assert 0.4 < summary["density"] < 0.6  # half of the conv and of the output pruned
    retrained = keras.models.load_model(str(tmp_path / "retrained" / "ticket" / "model.keras"))
    assert [l.name for l in masked_layers(retrained)] == ["blk_conv", "logits"]  # still nested, still masked
