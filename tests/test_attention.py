"""A transformer encoder of plain Keras layers: every kernel masked (the attention projections too), masks that
hold through training and saving, the searches, and the conversions back to plain layers."""
import numpy as np
import pytest

import lt_keras
from lt_keras import Mask, compact, keras, mask_model, masked_layers, strip_masks, tf
from lt_keras.convert import coverage
from lt_keras.imp import ImpConfig
from lt_keras.models import text_encoder
from lt_keras.precision import SearchPrecision


def kernel_weights(model) -> int:
    """Trainable weights that are not biases or normalization scales and offsets."""
    return sum(w.shape.num_elements() for w in model.trainable_weights
               if not any(part in w.name for part in ("bias", "gamma", "beta")))


def tokens(n=16, seed=0):
    return np.random.RandomState(seed).randint(0, 100, (n, 16)).astype(np.int32)


def test_mask_model_masks_every_kernel_of_a_transformer_encoder():
    keras.utils.set_random_seed(0)
    plain = text_encoder()
    model = mask_model(plain)
    names = [layer.name for layer in masked_layers(model)]
    assert names[:5] == ["embed", "block1_attention_query", "block1_attention_key", "block1_attention_value",
                         "block1_attention_attention_output"]
    assert sum(layer.kernel.shape.num_elements() for layer in masked_layers(model)) == kernel_weights(plain)
    assert coverage(model) == 1.0 and coverage(plain) == 0.0
    np.testing.assert_allclose(model(tokens()).numpy(), plain(tokens()).numpy(), atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pruned_attention_weights_stay_zero_through_training_saving_and_stripping(optimizer, tmp_path):
    keras.utils.set_random_seed(0)
    model = mask_model(text_encoder())
    rng = np.random.RandomState(1)
    mask = Mask({k: (rng.rand(*v.shape) < 0.4).astype(np.float32) for k, v in Mask.ones_like(model).items()})
    mask.apply_to(model)
    model.compile(keras.optimizers.Adam(0.01) if optimizer == "adam" else keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    query = model.get_layer("block1_attention")._query_dense
    before = query.kernel.numpy().copy()
    model.fit(tokens(), np.arange(16) % 3, epochs=3, batch_size=4, verbose=0)
    pruned = mask["block1_attention_query/kernel"] == 0
    assert np.all(query.kernel.numpy()[pruned] == 0) and not np.allclose(query.kernel.numpy()[~pruned],
                                                                          before[~pruned])
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert Mask.from_model(loaded) == mask
    np.testing.assert_allclose(loaded(tokens()).numpy(), model(tokens()).numpy(), atol=1e-6)
    stripped = strip_masks(model)
    assert not masked_layers(stripped) and type(stripped.get_layer("block1_attention")).__name__ == \
        "MultiHeadAttention"
    np.testing.assert_allclose(stripped(tokens()).numpy(), model(tokens()).numpy(), atol=1e-5)
    compacted = compact(model)  # attention and LayerNormalization keep their channels; nothing else may go
    np.testing.assert_allclose(compacted(tokens()).numpy(), model(tokens()).numpy(), atol=1e-5)


def test_two_imp_rounds_and_a_topk_supermask_on_the_encoder():
    keras.utils.set_random_seed(0)
    model = mask_model(text_encoder())
    x, y = tokens(), np.arange(16) % 3
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    search = lt_keras.find_ticket(model, lambda m, cbs: m.fit(x, y, batch_size=8, epochs=1, callbacks=cbs,
                                                              verbose=0), ImpConfig(rounds=2))
    densities = search.mask.layer_densities()
    assert densities["block1_attention_value/kernel"] < 0.7 and Mask.from_model(model) == search.mask
    supermask = mask_model(text_encoder(), mask_mode="topk", keep_fraction=0.3)
    value = supermask.get_layer("block2_attention")._value_dense
    assert value.kernel_scores.trainable and not value.kernel.trainable
    supermask.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = value.kernel_scores.numpy().copy()
    supermask.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(value.kernel_scores.numpy(), before)
    assert int(value.hard_mask().numpy().sum()) == round(0.3 * value.kernel.shape.num_elements())


def test_the_8bit_search_refuses_attention_by_name():
    with pytest.raises(lt_keras.LtKerasError, match="block1_attention_query"):
        SearchPrecision("int8").to_search(mask_model(text_encoder()))


def test_the_encoder_exports_as_a_saved_model_of_integer_inputs(tmp_path):
    from lt_keras.export import export_ticket

    keras.utils.set_random_seed(0)
    model = mask_model(text_encoder())
    Mask({k: (np.random.RandomState(2).rand(*v.shape) < 0.3).astype(np.float32)
          for k, v in Mask.ones_like(model).items()}).apply_to(model)
    report = export_ticket(model, str(tmp_path / "saved"), tokens(8), tolerance=1e-5)
    assert report["max_abs_diff_saved_model"] <= 1e-5 and 0.6 < report["total_sparsity"] < 0.8
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    np.testing.assert_allclose(serve(inputs=tf.constant(tokens(3)))["logits"].numpy(),
                               model(tokens(3), training=False).numpy(), atol=1e-5)
