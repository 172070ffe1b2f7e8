"""Sparse serving of unstructured tickets: dense layers that compute with their nonzero weights only where
that measures faster.

TensorFlow runs a dense matmul whatever the zeros; ``tf.sparse.sparse_dense_matmul`` skips them but pays
for indexing, so whether it wins depends on the layer, the density and the batch size (for LeNet-300-100 at
3.6% on a CPU: about 0.8x the dense time at batch 1, over 2x at batch 64). So nothing is assumed: each
pruned Dense layer is timed both ways at each batch size of the report, and computes sparse exactly at the
batch sizes where it measured faster (a batch-size switch when that differs between sizes). The result is
a plain SavedModel: the switch and both computations are traced into it, so it serves without lt_keras.
Convolutions stay dense (TensorFlow has no sparse convolution kernel).
"""
import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.convert import flatten_model
from lt_keras.export_report import median_ms
from lt_keras.layers import walk_layers

SWITCH_BATCHES = (1, 4, 16, 64)  # the batch sizes each layer is timed at


@keras.utils.register_keras_serializable(package="lt_keras")
class SparseDense(keras.layers.Layer):
    """``Dense`` that computes ``x @ kernel`` from the kernel's nonzero entries for batch sizes in
    [``sparse_from``, ``sparse_below``) and densely otherwise (both stored only when both are used)."""

    def __init__(self, units, nonzero, sparse_from=0, sparse_below=None, use_bias=True, activation=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.units, self.nonzero, self.use_bias = int(units), int(nonzero), bool(use_bias)
        self.sparse_from, self.sparse_below = int(sparse_from), sparse_below
        self.activation = keras.activations.get(activation)

    @property
    def always_sparse(self):
        return self.sparse_from <= 1 and self.sparse_below is None

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.indices = self.add_weight("indices", (self.nonzero, 2), tf.int64, "zeros", trainable=False)
        self.values = self.add_weight("values", (self.nonzero,), self.dtype, "zeros", trainable=False)
        self.kernel = None if self.always_sparse else self.add_weight("kernel", (fan_in, self.units), self.dtype,
                                                                      "zeros", trainable=False)
        self.bias = self.add_weight("bias", (self.units,), self.dtype, "zeros", trainable=False) if self.use_bias \
            else None
        self.fan_in = fan_in

    def call(self, inputs):
        def sparse():  # (out, in) sparse times x^T, transposed back
            transposed = tf.SparseTensor(self.indices, self.values, (self.units, self.fan_in))
            return tf.transpose(tf.sparse.sparse_dense_matmul(transposed, inputs, adjoint_b=True))

        if self.always_sparse:
            outputs = sparse()
        else:
            batch = tf.shape(inputs)[0]
            below = self.sparse_below if self.sparse_below is not None else np.iinfo(np.int32).max
            use_sparse = tf.logical_and(batch >= self.sparse_from, batch < below)
            outputs = tf.cond(use_sparse, sparse, lambda: tf.matmul(inputs, self.kernel))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "nonzero": self.nonzero,
                "sparse_from": self.sparse_from, "sparse_below": self.sparse_below, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}

    def set_kernel(self, kernel, bias=None):
        transposed = np.asarray(kernel, np.float32).T
        rows, cols = np.nonzero(transposed)  # row-major: the order sparse_dense_matmul wants
        self.indices.assign(np.stack([rows, cols], axis=1).astype(np.int64))
        self.values.assign(transposed[rows, cols])
        if self.kernel is not None:
            self.kernel.assign(kernel)
        if bias is not None:
            self.bias.assign(bias)


def _layer_times(kernel, batches):
    """Median ms of the dense and the sparse product with ``kernel`` at each batch size."""
    transposed = np.asarray(kernel, np.float32).T
    rows, cols = np.nonzero(transposed)
    sparse_kernel = tf.SparseTensor(np.stack([rows, cols], 1).astype(np.int64), transposed[rows, cols],
                                    transposed.shape)
    dense_kernel = tf.constant(kernel, tf.float32)
    dense = tf.function(lambda x: tf.matmul(x, dense_kernel))
    sparse = tf.function(lambda x: tf.sparse.sparse_dense_matmul(sparse_kernel, x, adjoint_b=True))
    rng, times = np.random.RandomState(0), {}
    for batch in batches:
        x = tf.constant(rng.rand(batch, kernel.shape[0]).astype(np.float32))
        d, s = median_ms([lambda: dense(x), lambda: sparse(x)], budget_s=0.5)
        times[batch] = {"dense_ms": d, "sparse_ms": s}
    return times


def choose(kernel, batches=SWITCH_BATCHES) -> dict:
    """How one Dense kernel is served: the measured times and the batch range computed sparse (``sparse_from``
    and ``sparse_below``; none when dense wins at every measured size)."""
    times = _layer_times(kernel, batches)
    wins = [b for b in sorted(batches) if times[b]["sparse_ms"] < times[b]["dense_ms"]]
    choice = {"times": {str(b): t for b, t in times.items()}, "sparse_batches": wins}
    if not wins:
        return {**choice, "path": "dense"}
    first, last = min(wins), max(wins)
    beyond = [b for b in sorted(batches) if b > last]
    below = beyond[0] if beyond else None  # dense again from the next measured size up
    before = [b for b in sorted(batches) if b < first]
    start = first if before else 0
    span = ("every batch" if start == 0 and below is None else
            f"batches {start or 1}..{below - 1}" if below is not None else f"batches >= {start}")
    return {**choice, "path": f"sparse ({span})", "sparse_from": start, "sparse_below": below}


def sparse_serving_model(plain, batches=SWITCH_BATCHES):
    """A copy of the plain model ``plain`` (nested blocks inlined) whose pruned Dense layers are ``SparseDense``
    where timing says so, and the choice made for each (layer name -> ``choose``'s record)."""
    plain = flatten_model(plain)
    choices = {}
    for layer in walk_layers(plain):
        if type(layer) is keras.layers.Dense and np.any(layer.kernel.numpy() == 0):
            choices[layer.name] = choose(layer.kernel.numpy(), batches)

    def clone(layer):
        choice = choices.get(layer.name)
        if choice is None or choice["path"] == "dense":
            return layer.__class__.from_config(layer.get_config())
        return SparseDense(layer.units, int(np.count_nonzero(layer.kernel.numpy())), choice["sparse_from"],
                           choice["sparse_below"], layer.use_bias, layer.activation, name=layer.name)

    served = keras.models.clone_model(plain, clone_function=clone)
    for old, new in zip(walk_layers(plain), walk_layers(served)):
        if isinstance(new, SparseDense):
            new.set_kernel(old.kernel.numpy(), old.bias.numpy() if old.use_bias else None)
        else:
            new.set_weights(old.get_weights())
    return served, choices
