"""The int8 search's TFMOT machinery, imported only when a search runs at int8 (``lt_keras.precision``).

``to_search_precision(model, precision)`` returns TFMOT's quantization twin
of a masked model (``quantize_annotate_layer`` + ``quantize_apply``):

- masked layers (``MaskedDense``/``MaskedConv2D``, fixed or supermask) get
  ``MaskedQuantizeConfig``: the weight quantizer sees ``kernel * kernel_mask``
  (pruned weights neither move nor widen the range), symmetric, per output
  channel for convolutions and per tensor for dense layers, straight-through
  gradient; the activation after the layer's activation function is
  quantized by TFMOT's ``MovingAverageQuantizer`` (``activation_bits``);
- built-in layers (pooling, ReLU, add, ...) use TFMOT's default 8-bit
  configs; a BatchNormalization that follows a masked convolution is not
  folded (TFMOT folds only plain Conv2D) and gets TFMOT's 8-bit output
  quantization;
- gradients (TFMOT has none): at every masked layer, (a) the backward error
  arriving at the layer's output and (b) the gradient of its kernel are
  quantized to ``gradient_bits`` with stochastic rounding, one scale per
  tensor from its max magnitude (the rounding noise is a fresh block of 4096
  uniform draws per tensor and step, tiled: unbiased per element, cheap).
  Nothing else is quantized in the backward pass (BN and bias gradients
  stay fp32).

``from_search_precision(qmodel)`` returns the fp32 masked model with the same
weights and masks, so a ticket found in 8 bits is retrained at fp32. The
masked layers keep their variables (kernel, masks, scores) untouched: the
quantized kernel is handed to ``call()`` through ``use_kernel_once`` only.
"""
import os

from absl import logging

from lt_keras._keras import keras, tf

_LEGACY_BEFORE = os.environ.get("TF_USE_LEGACY_KERAS")
import tensorflow_model_optimization as tfmot  # noqa: E402  (sets TF_USE_LEGACY_KERAS=1 for the process)

if os.environ.get("TF_USE_LEGACY_KERAS") != _LEGACY_BEFORE:
    # TFMOT resolved tf.keras to Keras 2 while importing (that cannot be undone in this process); the variable
    # it set is put back, so child processes and later readers of the environment see what the user had.
    if _LEGACY_BEFORE is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = _LEGACY_BEFORE
    logging.warning("TFMOT (the 8-bit search) resolved tf.keras to Keras 2 in this process unless it was in use "
                    "already; TF_USE_LEGACY_KERAS is as it was. lt_keras models come from lt_keras.keras either way.")

from lt_keras.convert import flatten_model
from lt_keras.errors import LtKerasError
from lt_keras.layers import (MASKED_RECURRENT, MaskedConv1D, MaskedConv2D, MaskedConv3D, MaskedEinsumDense,
                             MaskedEmbedding, MaskedSeparableConv2D, is_masked, masked_layers, walk_layers)

_FP32_CONFIG = "_lt_fp32_config"


def stochastic_round_quantize(x, bits):
    """Quantize ``x`` to ``2^bits - 1`` symmetric levels, one scale from max|x|, stochastic rounding.

    Unbiased (E[q] = x), zero stays exactly zero, and a zero tensor passes through.
    """
    levels = float(2 ** (bits - 1) - 1)
    scale = tf.reduce_max(tf.abs(x)) / levels
    safe = tf.where(scale > 0, scale, tf.ones_like(scale))
    q = tf.floor(x / safe + _uniform_noise(x))
    q = tf.clip_by_value(q, -levels, levels) * safe
    return tf.where(scale > 0, q, x)


_NOISE_BLOCK = 4096


def _uniform_noise(x):
    """U[0, 1) noise shaped like ``x``: a fresh block of 4096 draws, tiled.

    Every element's noise is uniform, so the rounding stays unbiased; drawing
    a whole kernel's worth of random numbers per step costs more than the
    LeNet step itself on a CPU (and more still under XLA).
    """
    n = tf.size(x)
    block = tf.random.uniform([_NOISE_BLOCK], dtype=x.dtype)
    tiled = tf.tile(block, [n // _NOISE_BLOCK + 1])[:n]
    return tf.reshape(tiled, tf.shape(x))


def quantize_gradient(x, bits):
    """Identity forward; the gradient flowing back through ``x`` is stochastically quantized."""

    @tf.custom_gradient
    def op(value):
        def grad(dy):
            return stochastic_round_quantize(dy, bits)

        return tf.identity(value), grad

    return op(x)


def symmetric_quantize(x, bits, per_channel):
    """Round-to-nearest symmetric fake quantization with a straight-through gradient."""
    levels = float(2 ** (bits - 1) - 1)
    axes = list(range(len(x.shape) - 1)) if per_channel else None
    scale = tf.reduce_max(tf.abs(x), axis=axes, keepdims=per_channel) / levels
    safe = tf.where(scale > 0, scale, tf.ones_like(scale))
    q = tf.round(x / safe) * safe
    return x + tf.stop_gradient(q - x)


@keras.utils.register_keras_serializable(package="lt_keras")
class MaskedWeightQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Quantizes ``kernel * kernel_mask`` (with the kernel's gradient quantized too)."""

    def __init__(self, bits=8, per_channel=False, gradient_bits=8):
        self.bits, self.per_channel, self.gradient_bits = bits, per_channel, gradient_bits

    def build(self, tensor_shape, name, layer):
        self._layer = layer.layer  # the wrapped masked layer: its fixed mask is read at call time
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        kernel = quantize_gradient(inputs, self.gradient_bits) if self.gradient_bits else inputs
        kernel = kernel * tf.stop_gradient(self._layer.kernel_mask)
        return symmetric_quantize(kernel, self.bits, self.per_channel)

    def get_config(self):
        return {"bits": self.bits, "per_channel": self.per_channel, "gradient_bits": self.gradient_bits}


@keras.utils.register_keras_serializable(package="lt_keras")
class ErrorQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Identity on the layer's output; quantizes the backward error arriving there."""

    def __init__(self, gradient_bits=8):
        self.gradient_bits = gradient_bits

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return quantize_gradient(inputs, self.gradient_bits)

    def get_config(self):
        return {"gradient_bits": self.gradient_bits}


# Kernels quantized per output channel: their last axis is it. A depthwise kernel's output channels span its
# last two axes and a transposed convolution's is the second last, so those are quantized per tensor.
_PER_CHANNEL = (MaskedConv1D, MaskedConv2D, MaskedConv3D)


@keras.utils.register_keras_serializable(package="lt_keras")
class MaskedQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """TFMOT QuantizeConfig for lt_keras masked layers (see the module docstring)."""

    def __init__(self, weight_bits=8, activation_bits=8, gradient_bits=8, per_channel=False):
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.gradient_bits, self.per_channel = gradient_bits, per_channel

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, MaskedWeightQuantizer(self.weight_bits, self.per_channel, self.gradient_bits))]

    def get_activations_and_quantizers(self, layer):
        quantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=self.activation_bits, per_axis=False, symmetric=False, narrow_range=False)
        return [(layer.activation, quantizer)]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.use_kernel_once(quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return [ErrorQuantizer(self.gradient_bits)] if self.gradient_bits else []

    def get_config(self):
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "gradient_bits": self.gradient_bits, "per_channel": self.per_channel}


def to_search_precision(model, precision):
    """TFMOT's fake-quantized twin of a masked ``model`` (weights, masks and scores carried over).

    ``precision`` is a ``lt_keras.precision.SearchPrecision``, whose bit widths are checked when it is made;
    users call ``SearchPrecision("int8").to_search(model)``.
    """
    if not masked_layers(model):
        raise LtKerasError(f"model {model.name!r} has no masked layers; convert it with lt_keras.mask_model first.")
    refused = {kind: [l.name for l in masked_layers(model) if isinstance(l, cls)] for kind, cls in (
        ("Embedding layers", MaskedEmbedding), ("EinsumDense layers or attention", MaskedEinsumDense))}
    refused["separable or recurrent layers"] = [l.name for l in model.submodules
                                                if isinstance(l, (MaskedSeparableConv2D, *MASKED_RECURRENT))]
    if any(refused.values()):
        named = "; ".join(f"{kind} ({', '.join(names)})" for kind, names in refused.items() if names)
        raise LtKerasError(f"the 8-bit search does not take {named}: TFMOT's 8-bit scheme has no quantized "
                           "Embedding or EinsumDense (and would fake-quantize the integer ids an Embedding reads) "
                           "and does not see inside a layer split in masked parts; search this model at fp32 "
                           "(--precision=fp32).")
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    fp32_saved = (type(model), model.get_config())
    model = flatten_model(model)  # TFMOT annotates only a flat graph's layers

    def clone(layer):
        new = type(layer).from_config(layer.get_config())
        if is_masked(layer):
            return annotate(new, quantize_config=MaskedQuantizeConfig(
                precision.weight_bits, precision.activation_bits, precision.gradient_bits,
                isinstance(layer, _PER_CHANNEL)))
        if isinstance(layer, keras.layers.BatchNormalization):
            # TFMOT folds BN only into a plain Conv2D; on its own it gets TFMOT's 8-bit output config.
            return annotate(new, quantize_config=_output_config())
        return annotate(new)

    try:
        annotated = keras.models.clone_model(model, clone_function=clone)
        with tfmot.quantization.keras.quantize_scope(_scope()):
            qmodel = tfmot.quantization.keras.quantize_apply(annotated)
    except (ValueError, RuntimeError, TypeError) as e:
        raise LtKerasError(f"TFMOT cannot quantize model {model.name!r}: {e}") from None
    _copy_weights(model, qmodel)
    for wrapper in qmodel.layers:  # a supermask's kernel stays frozen: TFMOT marks quantized weights trainable
        inner = getattr(wrapper, "layer", None)
        if inner is not None and is_masked(inner) and inner.is_supermask:
            wrapper._trainable_weights = [w for w in wrapper._trainable_weights if w is not inner.kernel]
    setattr(qmodel, _FP32_CONFIG, fp32_saved)
    qmodel.save = _refuse_save  # TFMOT's wrappers around our layers do not load back from .keras
    return qmodel


def _refuse_save(*args, **kwargs):
    raise LtKerasError("an 8-bit search twin cannot be saved as a model (TFMOT's wrappers around masked layers do "
                       "not load back); save SearchPrecision('int8').to_fp32(twin) instead: the fp32 masked "
                       "model with the same weights and masks. twin.save_weights(...) works for checkpoints.")


def from_search_precision(qmodel):
    """The fp32 masked model of a twin made by ``to_search_precision``: same weights, same masks."""
    saved = getattr(qmodel, _FP32_CONFIG, None)
    if saved is None:
        raise LtKerasError(f"model {qmodel.name!r} is not a twin made by lt_keras.precision.SearchPrecision.to_search.")
    cls, config = saved
    model = cls.from_config(config)
    _copy_weights(qmodel, model)
    return model


def _output_config():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs,
    )

    return default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()


def _scope():
    return {"Default8BitOutputQuantizeConfig": type(_output_config()), "MaskedQuantizeConfig": MaskedQuantizeConfig,
            "MaskedWeightQuantizer": MaskedWeightQuantizer, "ErrorQuantizer": ErrorQuantizer}


def _short(variable):
    return variable.name.split("/")[-1].split(":")[0]


def _copy_weights(source, target):
    """Copy every weight of ``source``'s layers into ``target``'s layers of the same name (wrappers unwrapped)."""
    by_name = {layer.name: layer for layer in walk_layers(source)}
    for layer in walk_layers(target):
        if not layer.weights or layer.name not in by_name:
            continue
        values = {_short(v): v for v in by_name[layer.name].weights}
        for variable in layer.weights:
            name = _short(variable)
            if name not in values or tuple(values[name].shape) != tuple(variable.shape):
                raise LtKerasError(f"cannot carry weight {layer.name}/{name} between precisions.")
            variable.assign(values[name])
