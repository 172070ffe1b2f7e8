"""The mask holds on every write path: a masked layer's output is ``kernel * mask`` (plus frozen values where
pruned, for the ``freeze_init`` family) however its variables were written, in eager and XLA, training or not.

Each case writes a model's variables one way (with values at the pruned kernel entries, as a user's
``set_weights`` or a checkpoint of another model would), then compares the masked model with a plain Keras
twin whose kernels are ``kernel * mask + frozen * (1 - mask)`` computed in numpy from the variables as they
now are.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lt_keras import MaskedConv2D, MaskedDense, masked_layers
from lt_keras._keras import keras, tf
from lt_keras.actions import MASK0_ACTIONS
from tests.conftest import REPO

MASK0 = list(MASK0_ACTIONS)


def masked_cnn(mask0):
    inputs = keras.Input((6, 6, 2))
    x = MaskedConv2D(3, 3, padding="same", activation="relu", name="conv", mask0=mask0)(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = MaskedDense(8, activation="relu", name="fc", mask0=mask0)(x)
    return keras.Model(inputs, MaskedDense(3, name="out", mask0=mask0)(x))


def plain_twin(model):
    """The same network of plain Keras layers, each kernel what its masked layer must compute with."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    twin = keras.Model(inputs, keras.layers.Dense(3)(x))
    for layer, plain in zip(masked_layers(model), [l for l in twin.layers if l.weights]):
        mask = layer.kernel_mask.numpy()
        kernel = layer.kernel.numpy() * mask
        if layer.kernel_frozen is not None:
            kernel = kernel + layer.kernel_frozen.numpy() * (1.0 - mask)
        plain.set_weights([kernel, layer.bias.numpy()])
    return twin


def x_batch(n=5, seed=0):
    return np.random.RandomState(seed).randn(n, 6, 6, 2).astype(np.float32)


def random_values(model, seed):
    """Every weight of ``model`` at new random values; masks 0/1 at about half density (none empty)."""
    rng = np.random.RandomState(seed)
    values = []
    for w in model.weights:
        if "kernel_mask" in w.name:
            m = (rng.rand(*w.shape) < 0.5).astype(np.float32)
            m.flat[0] = 1.0
            values.append(m)
        else:
            values.append(rng.randn(*w.shape).astype(np.float32))
    return values


def assert_computes_kernel_times_mask(model, label):
    twin, x = plain_twin(model), x_batch()
    expected = twin(x).numpy()
    assert np.abs(expected).max() > 0
    for training in (False, True):
        eager = model(x, training=training).numpy()
        xla = tf.function(lambda v: model(v, training=training), jit_compile=True)(tf.constant(x)).numpy()
        np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{label}, eager, training={training}")
        np.testing.assert_allclose(xla, expected, rtol=1e-5, atol=1e-5, err_msg=f"{label}, XLA, training={training}")


def _donor(mask0, seed=7):
    donor = masked_cnn(mask0)
    donor.set_weights(random_values(donor, seed))
    return donor


def write_mask_assign(model, tmp_path):
    for i, layer in enumerate(masked_layers(model)):
        mask = (np.random.RandomState(i).rand(*layer.kernel_mask.shape) < 0.5).astype(np.float32)
        layer.kernel_mask.assign(mask)
    return model


def write_prune_everything(model, tmp_path):
    for layer in masked_layers(model):
        layer.kernel_mask.assign(np.zeros(layer.kernel_mask.shape, np.float32))
    return model


def write_layer_set_weights(model, tmp_path):
    values = random_values(model, 3)
    offset = 0
    for layer in model.layers:
        n = len(layer.weights)
        layer.set_weights(values[offset:offset + n])
        offset += n
    return model


def write_model_set_weights(model, tmp_path):
    model.set_weights(random_values(model, 4))
    return model


def write_load_weights_h5(model, tmp_path):
    path = os.path.join(tmp_path, "donor.weights.h5")
    _donor(model.layers[1].mask0).save_weights(path)
    model.load_weights(path)
    return model


def write_load_weights_tf(model, tmp_path):
    path = os.path.join(tmp_path, "donor_ckpt")
    _donor(model.layers[1].mask0).save_weights(path, save_format="tf")
    model.load_weights(path)
    return model


def write_checkpoint_restore(model, tmp_path):
    path = tf.train.Checkpoint(model=_donor(model.layers[1].mask0)).write(os.path.join(tmp_path, "ckpt"))
    tf.train.Checkpoint(model=model).read(path).assert_consumed()
    return model


def write_keras_load(model, tmp_path):
    path = os.path.join(tmp_path, "donor.keras")
    _donor(model.layers[1].mask0).save(path)
    return keras.models.load_model(path)


def _trained(optimizer, callbacks=()):
    def write(model, tmp_path):
        model.set_weights(random_values(model, 5))  # values where the masks prune: no apply_to
        model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        y = np.random.RandomState(1).randint(0, 3, 20)
        model.fit(np.concatenate([x_batch(10, 1), x_batch(10, 2)]), y, batch_size=5, epochs=2, verbose=0,
                  callbacks=list(callbacks))
        return model
    return write


class _WritesKernels(keras.callbacks.Callback):
    """A user's callback that writes every kernel (values at pruned entries too) after each batch."""

    def on_train_batch_end(self, batch, logs=None):
        for i, layer in enumerate(masked_layers(self.model)):
            layer.kernel.assign(np.random.RandomState(batch + i).randn(*layer.kernel.shape).astype(np.float32))


WRITES = {
    "kernel_mask.assign": write_mask_assign,
    "kernel_mask.assign(all zeros)": write_prune_everything,
    "layer.set_weights": write_layer_set_weights,
    "model.set_weights": write_model_set_weights,
    "load_weights(h5)": write_load_weights_h5,
    "load_weights(tf checkpoint)": write_load_weights_tf,
    "tf.train.Checkpoint restore": write_checkpoint_restore,
    ".keras load": write_keras_load,
    "fit with Adam": _trained(lambda: keras.optimizers.Adam(1e-2)),
    "fit with SGD": _trained(lambda: keras.optimizers.SGD(0.1, momentum=0.9)),
    "fit with AdamW": _trained(lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1)),
    "a callback writes the kernel": _trained(lambda: keras.optimizers.SGD(0.01), [_WritesKernels()]),
}


@pytest.mark.parametrize("mask0", MASK0)
@pytest.mark.parametrize("write", list(WRITES))
def test_output_is_kernel_times_mask_after_every_write(write, mask0, tmp_path):
    model = masked_cnn(mask0)
    model.set_weights(random_values(model, 1))
    model = WRITES[write](model, str(tmp_path))
    assert_computes_kernel_times_mask(model, f"{write}, mask0={mask0}")


@pytest.mark.parametrize("mask0", ["zero", "freeze_init_zero_mask"])
def test_strip_masks_bakes_the_mask_however_it_was_written(mask0):
    """The plain model strip_masks gives computes what the masked one does, also when the stored kernel holds
    values where the mask prunes (a mask written by assign: training would store zeros, this did not)."""
    from lt_keras import strip_masks

    model = masked_cnn(mask0)
    model.set_weights(random_values(model, 2))
    plain = strip_masks(model)
    assert not any(hasattr(layer, "kernel_mask") for layer in plain.layers)
    np.testing.assert_allclose(plain(x_batch()).numpy(), plain_twin(model)(x_batch()).numpy(), rtol=1e-5, atol=1e-5)


def test_prune_everything_gives_the_bias_alone():
    """The new user's check: a Dense layer whose mask is assigned all zeros outputs its bias (here 0)."""
    inputs = keras.Input((20,))
    model = keras.Model(inputs, MaskedDense(3, name="d")(inputs))
    layer = masked_layers(model)[0]
    layer.kernel_mask.assign(np.zeros(layer.kernel_mask.shape, np.float32))
    assert np.abs(model.predict(np.random.rand(4, 20).astype(np.float32), verbose=0)).max() == 0.0


MIRRORED = textwrap.dedent("""
    import numpy as np
    from lt_keras.distribute import make_strategy, split_cpu
    split_cpu(2)
    from lt_keras import masked_layers
    from lt_keras._keras import keras, tf
    from tests.test_mask_holds import _WritesKernels, masked_cnn, plain_twin, random_values, x_batch
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = masked_cnn("{mask0}")
        model.set_weights(random_values(model, 1))
        model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.concatenate([x_batch(10, 1), x_batch(10, 2)]), np.arange(20) % 3, batch_size=10, epochs=2,
              verbose=0, callbacks=[_WritesKernels()])
    for layer in masked_layers(model):  # a mask written in cross-replica context reaches every replica
        layer.kernel_mask.assign((np.random.RandomState(3).rand(*layer.kernel_mask.shape) < 0.5).astype("float32"))
    expected = plain_twin(model)(x_batch()).numpy()
    for training in (False, True):
        outs = strategy.run(tf.function(lambda v: model(v, training=training)), (tf.constant(x_batch()),))
        for out in strategy.experimental_local_results(outs):
            np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    print("replicas agree")
""")


@pytest.mark.parametrize("mask0", ["zero", "freeze_init"])
def test_output_is_kernel_times_mask_on_every_replica_of_a_mirrored_strategy(mask0):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", MIRRORED.format(mask0=mask0)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "replicas agree" in done.stdout, done.stderr[-3000:]
