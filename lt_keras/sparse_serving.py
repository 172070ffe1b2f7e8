"""Sparse serving of unstructured tickets: dense layers that compute with their nonzero weights only where
that measures faster, end to end.

TensorFlow runs a dense matmul whatever the zeros; ``tf.sparse.sparse_dense_matmul`` skips them but pays
for indexing, so whether it wins depends on the layer, the density and the batch size (for LeNet-300-100 at
3.6% on a CPU: about 0.8x the dense time at batch 1, over 2x at batch 64). So nothing is assumed. Each
pruned Dense layer is timed both ways at each batch size of ``SWITCH_BATCHES``; the layers that won at a
batch size make that size's candidate graph; each candidate and the dense model are then timed whole, and
each batch size is served by the graph that was fastest there (the dense one where no candidate beats it).
Between two measured sizes the smaller one's graph serves. The graphs and the batch-size switch are traced
into a plain SavedModel, which serves without lt_keras. Convolutions stay dense (TensorFlow has no sparse
convolution kernel).
"""
import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.convert import flatten_model
from lt_keras.export_report import median_ms
from lt_keras.layers import walk_layers

SWITCH_BATCHES = (1, 4, 16, 64)  # the batch sizes each layer and each graph is timed at


@keras.utils.register_keras_serializable(package="lt_keras")
class SparseDense(keras.layers.Layer):
    """``Dense`` computing ``x @ kernel`` from the kernel's ``nonzero`` entries (``sparse_dense_matmul``)."""

    def __init__(self, units, nonzero, use_bias=True, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.nonzero, self.use_bias = int(units), int(nonzero), bool(use_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.fan_in = int(input_shape[-1])
        self.indices = self.add_weight("indices", (self.nonzero, 2), tf.int64, "zeros", trainable=False)
        self.values = self.add_weight("values", (self.nonzero,), self.dtype, "zeros", trainable=False)
        self.bias = (self.add_weight("bias", (self.units,), self.dtype, "zeros", trainable=False) if self.use_bias
                     else None)

    def call(self, inputs):
        transposed = tf.SparseTensor(self.indices, self.values, (self.units, self.fan_in))  # (out, in)
        outputs = tf.transpose(tf.sparse.sparse_dense_matmul(transposed, inputs, adjoint_b=True))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "nonzero": self.nonzero, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}

    def set_kernel(self, kernel, bias=None):
        transposed = np.asarray(kernel, np.float32).T
        rows, cols = np.nonzero(transposed)  # row-major: the order sparse_dense_matmul wants
        self.indices.assign(np.stack([rows, cols], axis=1).astype(np.int64))
        self.values.assign(transposed[rows, cols])
        if bias is not None:
            self.bias.assign(bias)


def _name(layers) -> str:
    """A graph's name in the record: the Dense layers it computes sparse ("dense": none)."""
    return "+".join(sorted(layers)) or "dense"


def _inputs(batch, shape, seed=0):
    return tf.constant(np.random.RandomState(seed).rand(batch, *shape).astype(np.float32))


def layer_times(kernel, batches=SWITCH_BATCHES) -> dict:
    """Median ms of the dense and the sparse product with ``kernel`` at each batch size."""
    layer = SparseDense(kernel.shape[1], int(np.count_nonzero(kernel)), use_bias=False)
    layer.build((None, kernel.shape[0]))
    layer.set_kernel(kernel)
    dense_kernel = tf.constant(kernel, tf.float32)
    dense, sparse = tf.function(lambda x: tf.matmul(x, dense_kernel)), tf.function(layer.call)
    times = {}
    for batch in batches:
        x = _inputs(batch, kernel.shape[:1])
        d, s = median_ms([lambda: dense(x), lambda: sparse(x)], budget_s=0.5)
        times[str(batch)] = {"dense_ms": d, "sparse_ms": s}
    return times


def _with_sparse(plain, names):
    """A copy of the flat ``plain`` with the Dense layers in ``names`` made ``SparseDense``."""
    def clone(layer):
        if layer.name not in names:
            return layer.__class__.from_config(layer.get_config())
        return SparseDense(layer.units, int(np.count_nonzero(layer.kernel.numpy())), layer.use_bias,
                           layer.activation, name=layer.name)

    graph = keras.models.clone_model(plain, clone_function=clone)
    for old, new in zip(walk_layers(plain), walk_layers(graph)):
        if isinstance(new, SparseDense):
            new.set_kernel(old.kernel.numpy(), old.bias.numpy() if old.use_bias else None)
        else:
            new.set_weights(old.get_weights())
    return graph


class Served(tf.Module):
    """The servable: ``serve(inputs)`` runs ``graphs[i]`` for batch sizes in [``starts[i]``, ``starts[i + 1]``)."""

    def __init__(self, graphs, starts, input_shape):
        super().__init__()
        self.graphs, self.starts = graphs, [int(s) for s in starts]
        spec = tf.TensorSpec((None, *input_shape), tf.float32, name="inputs")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, inputs):
        if len(self.graphs) == 1:
            return {"logits": self.graphs[0](inputs, training=False)}
        index = tf.reduce_sum(tf.cast(tf.shape(inputs)[0] >= tf.constant(self.starts[1:]), tf.int32))
        branches = [lambda g=g: g(inputs, training=False) for g in self.graphs]
        return {"logits": tf.switch_case(index, branches)}

    def save(self, directory):
        tf.saved_model.save(self, directory, signatures={"serving_default": self.serve})
        return directory


def sparse_serving(plain, batches=SWITCH_BATCHES):
    """The servable of the plain model ``plain`` (a ``Served``) and what was measured and chosen: per pruned
    Dense layer its times and the batch sizes it computes sparse at, per batch size the graph serving it."""
    plain = flatten_model(plain)
    input_shape = tuple(plain.input_shape[1:])
    pruned = [l for l in walk_layers(plain) if type(l) is keras.layers.Dense and np.any(l.kernel.numpy() == 0)]
    times = {l.name: layer_times(l.kernel.numpy(), batches) for l in pruned}
    winners = {b: frozenset(n for n, t in times.items() if t[str(b)]["sparse_ms"] < t[str(b)]["dense_ms"])
               for b in batches}
    candidates = [frozenset()] + sorted({w for w in winners.values() if w}, key=sorted)
    graphs = [plain] + [_with_sparse(plain, names) for names in candidates[1:]]
    spec = [tf.TensorSpec((None, *input_shape), tf.float32)]
    calls = [tf.function(lambda x, g=g: g(x, training=False), input_signature=spec) for g in graphs]
    chosen, whole = {}, {}
    for b in batches:
        x = _inputs(b, input_shape, seed=1)
        ms = median_ms([lambda c=c: c(x) for c in calls], budget_s=0.6)
        chosen[b] = int(np.argmin(ms))
        whole[str(b)] = {_name(candidates[i]): m for i, m in enumerate(ms)}
    starts, order = [], []
    for b in sorted(batches):  # a new range wherever the fastest graph changes
        if not order or order[-1] != chosen[b]:
            order.append(chosen[b])
            starts.append(1 if not starts else b)
    served = Served([graphs[i] for i in order], starts, input_shape)
    verified = {}
    if len(order) > 1:  # the switch has a cost of its own: ship it only where it is never slower than dense
        served, order, starts, verified = _never_slower(served, graphs, order, starts, input_shape, batches,
                                                        candidates)
    layers = {}
    for layer in pruned:
        sparse_at = [b for b in sorted(batches)
                     if layer.name in candidates[order[sum(b >= s for s in starts[1:])]]]
        layers[layer.name] = {"times": times[layer.name], "sparse_batches": sparse_at,
                              "path": f"sparse at batch sizes {sparse_at}" if sparse_at else "dense"}
    record = {"layers": layers, "graph_ms": whole, **verified,
              "switch": [{"from_batch": s, "sparse_layers": sorted(candidates[i])} for s, i in zip(starts, order)]}
    return served, record


def _never_slower(served, graphs, order, starts, input_shape, batches, candidates):
    """The servable to ship: of the switched one and each single graph it switches between (and the dense
    one), timed whole again, those no slower than the dense graph at any batch size, the fastest on average
    (the dense graph wins ties); with the record of that choice (each option's ratios to dense)."""
    singles = sorted(set(order) | {0})
    options = [(served, order, starts)] + [(Served([graphs[i]], [1], input_shape), [i], [1]) for i in singles]
    names = ["switch"] + [_name(candidates[i]) for i in singles]
    dense = 1 + singles.index(0)
    ratios = [{} for _ in options]
    for b in batches:
        x = _inputs(b, input_shape, seed=2)
        ms = median_ms([lambda o=o: o[0].serve(x) for o in options], budget_s=0.6)
        for i, m in enumerate(ms):
            ratios[i][str(b)] = m / ms[dense]
    fine = [i for i, r in enumerate(ratios) if max(r.values()) <= 1.0]
    best = min(fine, key=lambda i: (float(np.mean(list(ratios[i].values()))), i != dense))
    record = {"options": {n: r for n, r in zip(names, ratios)}, "shipped": names[best]}
    return (*options[best], record)
