"""Compaction: a ticket without its dead units and channels, computing the same outputs (inference mode).

A channel can go when nothing downstream reads it: every layer that mixes
channels (Dense, Conv1D/2D/3D, Conv2DTranspose) has all-zero weights from it,
or it is a known constant that the next layer's bias can absorb. A unit whose
incoming weights are all pruned emits such a constant (its activation of its
bias), as does a channel that BatchNorm scales by zero (Early-Bird's channel
masks); the constant is carried through BatchNorm, activations, pooling and
additions and folded into the next Dense's or unpadded ('valid' or 1x1)
convolution's bias. A convolution that pads with zeros sees the constant only
inside the image, so there a nonzero constant keeps its channel (exactness
first); a zero one goes.

Channels are tied where layers compute per channel: BatchNorm, activations,
pooling, global pooling, flatten (each channel's spatial positions), residual
additions and other merges (one channel across all inputs), concatenation
(each input's channels in the output), depthwise convolutions (an input
channel and its outputs). A tied group goes only when every member may go.
Model inputs and outputs, layers this module does not know (attention,
normalization across channels, reshapes, softmax), shared layers and grouped
or channels-first convolutions keep all their channels. No tensor loses its
last channel (an empty layer is never written).

Written by hand because neither TFMOT nor Keras removes anything; channel
pruners (Torch-Pruning, NNI's ModelSpeedup, keras-surgeon) drop channels
without folding what the dropped channels still emitted.
"""
import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.convert import _check_convertible, flatten_model, strip_masks
from lt_keras.errors import LtKerasError
from lt_keras.graph import input_name, nodes, rebuild
from lt_keras.layers import masked_layers

_L = keras.layers
_ELEMENTWISE_ACTIVATIONS = {"linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "softplus",
                            "softsign", "swish", "silu", "gelu", "exponential", "mish", "leaky_relu"}
_PER_CHANNEL = tuple(getattr(_L, n) for n in (
    "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "BatchNormalization", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Activation", "Identity") if hasattr(_L, n))
_POOLING = (_L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D, _L.AveragePooling2D,
            _L.AveragePooling3D, _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D,
            _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D, _L.Cropping1D, _L.Cropping2D,
            _L.Cropping3D, _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D)  # a uniform channel stays uniform
_PADDING = (_L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D)  # ... except where zeros are added
_MERGES = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)
_CONVOLUTIONS = (_L.Conv1D, _L.Conv2D, _L.Conv3D)


def compact(model):
    """A plain functional copy of ``model`` (masks baked in, nested blocks inlined) without the units and channels
    that no output depends on (see the module docstring); outputs equal ``model(x, training=False)`` up to float
    rounding. Layers keep their names; a Dense or convolution that absorbs a removed constant gains a bias."""
    _check_convertible(model)
    flat = flatten_model(strip_masks(model) if masked_layers(model) else model)
    plan = _Plan(flat)
    return plan.apply()


def compaction_summary(model, compacted) -> dict:
    """Layer name -> [outputs kept, outputs before] for every layer that ``compact`` narrowed."""
    out = {}
    before = {l.name: l for l in flatten_model(model).layers}
    for layer in compacted.layers:
        old = before.get(layer.name)
        if old is not None and layer.output_shape != old.output_shape:
            out[layer.name] = [int(np.prod(_last(layer.output_shape))), int(np.prod(_last(old.output_shape)))]
    return out


def _last(shape):
    return (shape[0] if isinstance(shape, list) else shape)[-1]


def _activation(fn):
    """``fn`` as a numpy function when it acts on each value alone (softmax does not: None)."""
    name = getattr(fn, "__name__", "")
    if name not in _ELEMENTWISE_ACTIVATIONS:
        return None
    return lambda x: fn(tf.constant(x, tf.float32)).numpy().astype(np.float64)


def _pads_nothing(layer):
    """Whether every output position of the convolution sees only the input (no zero padding): 'valid', or a
    1x1 kernel, whose 'same' padding is empty at every stride."""
    return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)


def _in_out(layer, kernel):
    """``kernel`` of a Dense or convolution with input channels second to last and outputs last (a transposed
    convolution stores them the other way round)."""
    return np.swapaxes(kernel, -1, -2) if type(layer) is _L.Conv2DTranspose else kernel


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


class _Plan:
    """Which channel of every tensor of a flat functional model goes, and the weights that stay.

    Every channel of every tensor is an element of a union-find; tied channels are one group. ``ok[e]``: this
    element's readers allow its removal; a group goes when all its elements allow it. ``const`` (per tensor and
    channel): the value a channel holds at every position for every input, NaN where it varies."""

    def __init__(self, model):
        self.model = model
        self.parent, self.ok = [], []
        self.ids, self.const = {}, {}
        self.io = {}  # name of a layer this module knows -> (input tensor id, output tensor id)
        self.absorbed = {}  # name of a Dense / convolution -> per input channel, the constant its bias can absorb
        calls = {}
        for layer, _, _, _ in nodes(model):
            calls[id(layer)] = calls.get(id(layer), 0) + 1
        self._opaque([], model.inputs)
        for layer, args, kwargs, outputs in nodes(model):
            inputs = [t for t in tf.nest.flatten(args) if id(t) in self.ids]
            read = [t for t in tf.nest.flatten((args, kwargs)) if id(t) in self.ids]  # tensors passed by keyword too
            known = (calls[id(layer)] == 1 and len(outputs) == 1 and inputs and len(read) == len(inputs)
                     and _channels_last(layer) and all(_last(t.shape) is not None for t in inputs + outputs))
            if known and self._visit(layer, inputs, outputs[0]):
                self.io[layer.name] = (id(inputs[0]), id(outputs[0]))
            else:
                self._opaque(read, outputs)
        for tensor in model.outputs:
            self._forbid(self.ids[id(tensor)])
        self._decide()

    # -- elements --------------------------------------------------------------------------------------------
    def _fresh(self, tensor, pinned=False, const=None):
        n = int(_last(tensor.shape))
        ids = np.arange(len(self.parent), len(self.parent) + n)
        self.parent.extend(ids.tolist())
        self.ok.extend([not pinned] * n)
        self._register(tensor, ids, const)
        return ids

    def _register(self, tensor, ids, const=None):
        self.ids[id(tensor)] = ids
        self.const[id(tensor)] = np.full(len(ids), np.nan) if const is None else np.asarray(const, np.float64)

    def _find(self, e):
        root = e
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[e] != root:
            self.parent[e], e = root, self.parent[e]
        return root

    def _union(self, a, b):
        for x, y in zip(np.ravel(a), np.ravel(b)):
            rx, ry = self._find(int(x)), self._find(int(y))
            if rx != ry:
                self.parent[ry] = rx

    def _forbid(self, ids, where=None):
        for e in (ids if where is None else np.asarray(ids)[where]):
            self.ok[int(e)] = False

    def _opaque(self, inputs, outputs):
        for t in inputs:
            self._forbid(self.ids[id(t)])
        for t in outputs:
            if _last(t.shape) is not None:
                self._fresh(t, pinned=True)
            else:
                self._register(t, np.zeros(0, int))

    # -- layers ----------------------------------------------------------------------------------------------
    def _visit(self, layer, inputs, out) -> bool:
        """Record ``layer``'s channels; False when it is not a layer this module knows."""
        kind = type(layer)
        x = inputs[0]
        ids, const = self.ids[id(x)], self.const[id(x)]
        if kind in (_L.Dense, *_CONVOLUTIONS, _L.Conv2DTranspose) and getattr(layer, "groups", 1) == 1:
            return self._mixing(layer, x, out)
        if kind is _L.Embedding:
            self._forbid(ids)
            table = layer.embeddings.numpy()
            self._fresh(out, const=np.where((table == 0).all(axis=0), 0.0, np.nan))
            return True
        if kind is _L.DepthwiseConv2D:
            return self._depthwise(layer, x, out)
        if kind in _PER_CHANNEL:
            if kind is _L.Activation and _activation(layer.activation) is None:
                return False
            if kind is _L.BatchNormalization and list(layer.axis) != [len(x.shape) - 1]:
                return False
            finite = np.isfinite(const)
            probe = np.nan_to_num(const).reshape((1,) * (len(x.shape) - 1) + (-1,)).astype(np.float32)
            values = np.asarray(layer(probe, training=False), np.float64).reshape(-1)
            const = np.where(finite, values, np.nan)
            if kind is _L.BatchNormalization and layer.scale:  # a zero scale makes a channel its offset
                offset = layer.beta.numpy() if layer.center else np.zeros(len(ids))
                const = np.where(layer.gamma.numpy() == 0, offset, const)
            self._register(out, ids, const)
            return True
        if kind in _POOLING:
            self._register(out, ids, const)
            return True
        if kind in _PADDING:
            self._register(out, ids, np.where(const == 0, 0.0, np.nan))
            return True
        if kind is _L.Flatten:
            if any(d is None for d in x.shape[1:]):
                return False
            spatial = int(np.prod(x.shape[1:-1]))
            flat = self._fresh(out, const=np.tile(const, spatial))
            self._union(np.tile(ids, spatial), flat)
            return True
        if kind in _MERGES:
            if len({_last(t.shape) for t in inputs}) != 1 or len({len(t.shape) for t in inputs}) != 1:
                return False
            for t in inputs[1:]:
                self._union(ids, self.ids[id(t)])
            consts = [self.const[id(t)] for t in inputs]
            finite = np.all([np.isfinite(c) for c in consts], axis=0)
            probe = [tf.constant(np.nan_to_num(c)[None], tf.float32) for c in consts]
            values = np.asarray(layer(probe), np.float64).reshape(-1)
            self._register(out, ids, np.where(finite, values, np.nan))
            return True
        if kind is _L.Concatenate and layer.axis in (-1, len(x.shape) - 1):
            self._register(out, np.concatenate([self.ids[id(t)] for t in inputs]),
                           np.concatenate([self.const[id(t)] for t in inputs]))
            return True
        return False

    def _mixing(self, layer, x, out) -> bool:
        """Dense and convolutions: a new channel per output; an input channel may go when its weights are zero
        or when it is a constant the bias absorbs exactly (Dense, unpadded convolutions; a zero one anywhere)."""
        act = _activation(layer.activation)  # None (softmax): each output depends on the others, all stay
        kernel = _in_out(layer, layer.kernel.numpy().astype(np.float64))
        kernel = kernel.reshape(-1, *kernel.shape[-2:])  # (taps, in, out)
        const = self.const[id(x)]
        uniform = type(layer) is _L.Dense or (type(layer) is not _L.Conv2DTranspose and _pads_nothing(layer))
        absorbed = np.isfinite(const) if uniform else (const == 0)
        reads = (kernel != 0).any(axis=0)  # (in, out)
        self._forbid(self.ids[id(x)], ~(absorbed | ~reads.any(axis=1)))
        bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
        pre = bias + np.where(absorbed, np.nan_to_num(const), 0.0) @ kernel.sum(axis=0)
        varies = reads[~absorbed].any(axis=0)
        self._fresh(out, pinned=act is None, const=None if act is None else np.where(varies, np.nan, act(pre)))
        self.absorbed[layer.name] = np.where(absorbed, np.nan_to_num(const), 0.0)
        return True

    def _depthwise(self, layer, x, out) -> bool:
        act = _activation(layer.activation)
        if act is None:  # per channel, but not a function of each value alone
            return False
        kernel = layer.depthwise_kernel.numpy().astype(np.float64)  # (h, w, channels, multiplier)
        multiplier = kernel.shape[-1]
        const = np.repeat(self.const[id(x)], multiplier)
        taps = kernel.reshape(-1, kernel.shape[-2] * multiplier)  # output channel c * multiplier + k
        absorbed = np.isfinite(const) if _pads_nothing(layer) else (const == 0)
        bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else 0.0
        pre = bias + np.where(absorbed, np.nan_to_num(const), 0.0) * taps.sum(axis=0)
        varies = (taps != 0).any(axis=0) & ~absorbed
        ids = self._fresh(out, const=np.where(varies, np.nan, act(pre)))
        self._union(np.repeat(self.ids[id(x)], multiplier), ids)
        return True

    # -- decision and surgery --------------------------------------------------------------------------------
    def _decide(self):
        roots = np.array([self._find(e) for e in range(len(self.parent))], dtype=int)
        goes = np.ones(len(roots), bool)
        np.logical_and.at(goes, roots, np.array(self.ok, bool))
        for ids in self.ids.values():  # never an empty tensor: keep its first channel's group
            if len(ids) and goes[roots[ids]].all():
                goes[roots[ids[0]]] = False
        removed = goes[roots]
        self.keep = {t: np.flatnonzero(~removed[ids]) for t, ids in self.ids.items()}

    def _weights(self, layer):
        """(config changes, weights) of ``layer``'s compacted twin."""
        kind = type(layer)
        if layer.name not in self.io:
            return {}, layer.get_weights()
        keep_in, keep_out = (self.keep[t] for t in self.io[layer.name])
        if layer.name in self.absorbed:
            kernel = layer.kernel.numpy()
            work = _in_out(layer, kernel)
            removed = np.ones(work.shape[-2], bool)
            removed[keep_in] = False
            folded = (self.absorbed[layer.name] * removed) @ work.reshape(-1, *work.shape[-2:]).sum(axis=0)
            bias = (layer.bias.numpy() if layer.use_bias else np.zeros(work.shape[-1])) + folded
            use_bias = bool(layer.use_bias or np.any(bias[keep_out] != 0))
            work = work[..., keep_in, :][..., keep_out]
            size = {"units": len(keep_out)} if kind is _L.Dense else {"filters": len(keep_out)}
            return ({**size, "use_bias": use_bias}, [_in_out(layer, work)]
                    + ([bias[keep_out].astype(kernel.dtype)] if use_bias else []))
        if kind is _L.Embedding:
            return {"output_dim": len(keep_out)}, [layer.embeddings.numpy()[:, keep_out]]
        if kind is _L.DepthwiseConv2D:
            weights = [layer.depthwise_kernel.numpy()[:, :, keep_in, :]]
            return {}, weights + ([layer.bias.numpy()[keep_out]] if layer.use_bias else [])
        if kind is _L.BatchNormalization:
            return {}, [w[keep_out] for w in layer.get_weights()]
        return {}, layer.get_weights()

    def apply(self):
        twins = {}

        def call(layer, args, kwargs):
            if id(layer) not in twins:
                changes, weights = self._weights(layer)
                twin = type(layer).from_config({**layer.get_config(), **changes})
                twins[id(layer)] = (twin, weights)
            return twins[id(layer)][0](*args, **kwargs)

        inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=input_name(t)) for t in self.model.inputs]
        outputs = rebuild(self.model, inputs, call)
        compacted = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=self.model.name)
        for twin, weights in twins.values():
            try:
                twin.set_weights(weights)
            except ValueError as e:
                raise LtKerasError(f"compact: layer {twin.name!r} could not take its compacted weights: {e}") from e
        return compacted
