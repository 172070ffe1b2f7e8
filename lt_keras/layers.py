"""Keras layers whose kernel is multiplied by a 0/1 mask.

The mask is a non-trainable weight, ``kernel_mask``, created right after the
layer's own variables. Every forward pass computes with ``kernel *
kernel_mask``, however the variables were written (``Mask.apply_to``,
``assign``, ``set_weights``, ``load_weights``, a checkpoint restore, a
replica sync): pruned entries never reach the output and get a zero
gradient. ``Mask.apply_to`` (and ``.keras`` loading, and
``lt_keras.training.fit``) also write zeros at the pruned entries of the
stored kernel and of the optimizer's slots for it, so ``get_weights()`` and
checkpoints show exact zeros, which no optimizer moves.

Subclasses change *which* mask is used by overriding ``effective_mask`` only;
the variable set and its creation order depend on ``get_config()`` alone, so
``.keras`` files (which store variables by creation order) round-trip.

``mask0`` says what pruned positions hold (Zhou et al.'s mask-0 actions,
``lt_keras.actions``): ``"zero"`` (default), or one of the ``freeze_init``
family, where they keep frozen values stored in a non-trainable
``kernel_frozen`` (set to the kernel when the layer is built or converted;
IMP sets it to theta_0, with the zeros the action asks for).

``mask_mode`` turns a layer into a supermask layer: ``"fixed"`` (default)
uses ``kernel_mask`` alone; ``"bernoulli"`` (Zhou et al.) samples
mask ~ Bernoulli(sigmoid(kernel_scores)) and ``"topk"`` (edge-popup) keeps
the ``keep_fraction`` largest |kernel_scores|, both with straight-through
gradients to the trainable ``kernel_scores``, while kernel and bias are
frozen. ``kernel_mask`` still multiplies in (a supermask can be learned
inside a ticket). ``eval_mask`` picks the inference mask: ``"sampled"``,
``"expected"`` (sigmoid(scores) > 0.5) or ``"topk"``. A Bernoulli layer
counts its draws in a non-trainable ``sample_count`` and keys each draw by
(``sample_seed``, its name, the count): the masks are a function of the
checkpointed state, so a resumed run draws exactly the masks an
uninterrupted one does.
"""
import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.actions import check_mask0
from lt_keras.bernoulli import sampled_mask
from lt_keras.errors import LtKerasError
from lt_keras.seeds import derive_seed
from lt_keras.straight_through import product, straight_through
from lt_keras.topk import top_k_masks

_PACKAGE = "lt_keras"


MASK_MODES = ("fixed", "bernoulli", "topk")
EVAL_MASKS = {"fixed": ("fixed",), "bernoulli": ("sampled", "expected"), "topk": ("topk",)}
MASK_OPTIONS = ("mask0", "mask_mode", "keep_fraction", "score_init", "eval_mask", "dynamic_weight_rescaling",
                "sample_seed")


class MaskedKernelMixin:
    """Adds ``kernel_mask`` and the masked-kernel computation to a Keras layer."""

    def __init__(self, *args, mask0="zero", mask_mode="fixed", keep_fraction=0.5, score_init=0.0,
                 eval_mask=None, dynamic_weight_rescaling=False, sample_seed=0, **kwargs):
        super().__init__(*args, **kwargs)  # the Keras layer (Dense / Conv2D) next in the MRO
        self._init_mask_options(mask0, mask_mode, keep_fraction, score_init, eval_mask, dynamic_weight_rescaling,
                                sample_seed)

    def __call__(self, inputs, *args, **kwargs):
        if type(inputs).__module__.startswith("keras."):
            raise LtKerasError(f"{type(self).__name__} {self.name!r} is a Keras 2 (tf_keras) layer and got a Keras 3 "
                               "tensor; build the model from lt_keras.keras, or build it in Keras 3 and convert it "
                               "with lt_keras.from_keras3 before lt_keras.mask_model.")
        return super().__call__(inputs, *args, **kwargs)

    def get_config(self):
        return self._mask_config(super().get_config())

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask()

    def _init_mask_options(self, mask0="zero", mask_mode="fixed", keep_fraction=0.5, score_init=0.0,
                           eval_mask=None, dynamic_weight_rescaling=False, sample_seed=0):
        check_mask0(mask0)
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode: {mask_mode!r} is not one of {list(MASK_MODES)}.")
        eval_mask = eval_mask or EVAL_MASKS[mask_mode][0]
        if eval_mask not in EVAL_MASKS[mask_mode]:
            raise ValueError(f"eval_mask: {eval_mask!r} does not go with mask_mode={mask_mode!r}; "
                             f"choose one of {list(EVAL_MASKS[mask_mode])}.")
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction: must be in (0, 1], got {keep_fraction}.")
        self.mask0, self.mask_mode, self.eval_mask = mask0, mask_mode, eval_mask
        self.keep_fraction, self.score_init = float(keep_fraction), float(score_init)
        self.dynamic_weight_rescaling = bool(dynamic_weight_rescaling)
        self.sample_seed = int(sample_seed)

    def _mask_config(self, config):
        config.update({name: getattr(self, name) for name in MASK_OPTIONS})
        return config

    @property
    def is_supermask(self):
        return self.mask_mode != "fixed"

    def add_weight(self, name=None, *args, **kwargs):
        # A supermask layer learns only its scores: the parent's kernel and bias are created frozen.
        if getattr(self, "mask_mode", "fixed") != "fixed" and name in ("kernel", "bias"):
            kwargs["trainable"] = False
        return super().add_weight(name, *args, **kwargs)

    def _build_mask(self):
        self.kernel_mask = self.add_weight(
            name="kernel_mask",
            shape=self.kernel.shape,
            dtype=self.kernel.dtype,
            initializer="ones",
            trainable=False,
        )
        self.kernel_frozen = None
        if self.mask0 != "zero":
            self.kernel_frozen = self.add_weight(
                name="kernel_frozen", shape=self.kernel.shape, dtype=self.kernel.dtype,
                initializer="zeros", trainable=False)
            self.kernel_frozen.assign(self.kernel)
        self.kernel_scores = None
        if self.is_supermask:
            # Top-k scores as the edge-popup code (kaiming_uniform_(a=sqrt(5))): U(+-1/sqrt(fan_in)).
            initializer = (keras.initializers.Constant(self.score_init) if self.mask_mode == "bernoulli"
                           else keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"))
            self.kernel_scores = self.add_weight(
                name="kernel_scores", shape=self.kernel.shape, dtype=self.kernel.dtype,
                initializer=initializer, trainable=True)
        self.sample_count = None
        if self.mask_mode == "bernoulli":  # every replica draws the first replica's mask
            self.sample_count = self.add_weight(
                name="sample_count", shape=(), dtype=tf.int64, initializer="zeros", trainable=False,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _next_sample_key(self):
        """(seed of this layer, number of this draw): the key of a fresh, reproducible Bernoulli mask."""
        count = self.sample_count.assign_add(1)
        word = derive_seed(self.sample_seed, 0, f"bernoulli/{self.name}")  # 31 bits
        return tf.stack([tf.constant(word, tf.int32), tf.cast(count, tf.int32)])

    def learned_mask(self, training=None, hard=False, factors=()):
        """The supermask for this pass times ``factors`` (the fixed mask, the kernel); straight-through unless
        ``hard``. The samplers multiply the factors into the mask and its slope in their own compiled pass."""
        scores = self.kernel_scores
        if not hard and self.mask_mode == "bernoulli" and (training or self.eval_mask == "sampled"):
            return sampled_mask(scores, self._next_sample_key(), *factors)
        if self.mask_mode == "topk":  # exactly round(keep_fraction * n) ones at the largest |scores|
            k = max(1, int(round(self.keep_fraction * int(np.prod(scores.shape)))))
            mask, slope = top_k_masks(scores, k, *factors)
        else:  # expected mask: sigmoid(scores) > 0.5, with the slope of sigmoid(scores)
            prob = tf.sigmoid(scores)
            scale = product(factors, scores)
            mask, slope = scale * tf.cast(scores > 0.0, scores.dtype), scale * prob * (1.0 - prob)
        return mask if hard else straight_through(scores, mask, slope)

    def hard_mask(self):
        """The 0/1 mask a ticket keeps: kernel_mask times the expected or top-k supermask."""
        if not self.is_supermask:
            return tf.convert_to_tensor(self.kernel_mask)
        return self.kernel_mask * self.learned_mask(hard=True)

    def effective_mask(self, training=None):
        """The 0/1 tensor the kernel is multiplied by in this forward pass.

        A fixed mask takes no gradient; ``stop_gradient`` lets TensorFlow skip
        computing one (measured ~6% of a LeNet step without XLA). A supermask
        layer returns its learned mask times the fixed one, straight-through.
        """
        fixed = tf.stop_gradient(self.kernel_mask)
        if not self.is_supermask:
            return fixed
        return self.learned_mask(training, factors=[fixed])

    def use_kernel_once(self, kernel):
        """Compute the next call with ``kernel`` in place of the kernel variable, which stays untouched.

        TFMOT's quantization wrapper (``lt_keras.quantize``) hands in the
        quantized kernel this way before every call it makes.
        """
        object.__setattr__(self, "_kernel_once", kernel)  # a tensor of one call: not tracked by Keras

    def masked_kernel(self, training=None):
        """``kernel * mask`` (plus frozen values where pruned): the kernel the layer computes with.

        A supermask's sampler returns the product itself where it can
        (``_kernel_folds_into_mask``).
        """
        override = getattr(self, "_kernel_once", None)
        if override is not None:
            object.__setattr__(self, "_kernel_once", None)
        if self._kernel_folds_into_mask and override is None:
            return self.learned_mask(training, factors=[tf.stop_gradient(self.kernel_mask), self.kernel])
        return self._compose(tf.cast(self.effective_mask(training), self.kernel.dtype), override)

    def store_zeros(self):
        """Write zeros at the stored kernel's pruned positions (after weights were set by other means)."""
        if self.kernel_frozen is None:
            self.kernel.assign(self.kernel * tf.cast(self.kernel_mask, self.kernel.dtype))

    def load_own_variables(self, store):
        """Load from a ``.keras`` file, then store zeros where pruned (files of older versions kept values)."""
        super().load_own_variables(store)
        self.store_zeros()

    @property
    def _kernel_folds_into_mask(self):
        """Whether the supermask sampler can return ``kernel * mask`` itself: no rescaling, no frozen values,
        no subclass mask. Without XLA that saves a pass over the weights each way."""
        return (self.is_supermask and not self.dynamic_weight_rescaling and self.kernel_frozen is None
                and type(self).effective_mask is MaskedKernelMixin.effective_mask)

    def deterministic_kernel(self):
        """The kernel a ticket or an export keeps: the hard (expected / top-k) mask, no sampling."""
        return self._compose(tf.cast(self.hard_mask(), self.kernel.dtype))

    def _compose(self, mask, kernel=None):
        kernel = (self.kernel if kernel is None else kernel) * mask
        if self.dynamic_weight_rescaling:
            # Zhou et al.: scale by numel / ones of the current mask; as in their code, a learned mask's gradient
            # also flows through the count (each score's slope), which pulls the layer's density.
            ones = tf.maximum(tf.reduce_sum(mask), 1.0)
            kernel *= tf.cast(tf.size(mask), kernel.dtype) / ones
        if self.kernel_frozen is not None:
            kernel += tf.stop_gradient(self.kernel_frozen) * (1.0 - mask)
        return kernel


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedDense(MaskedKernelMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with a fixed 0/1 kernel mask."""

    def call(self, inputs, training=None):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            raise TypeError(
                f"{type(self).__name__} {self.name!r} takes dense tensors, "
                f"got {type(inputs).__name__}."
            )
        if inputs.dtype.base_dtype != self._compute_dtype_object.base_dtype:
            inputs = tf.cast(inputs, dtype=self._compute_dtype_object)
        kernel = self.masked_kernel(training)
        rank = inputs.shape.rank
        if rank == 2 or rank is None:
            outputs = tf.matmul(inputs, kernel)
        else:
            outputs = tf.tensordot(inputs, kernel, [[rank - 1], [0]])
            if not tf.executing_eagerly():
                outputs.set_shape(inputs.shape[:-1].concatenate([self.units]))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


class _MaskedConvolution(MaskedKernelMixin):
    """Keras's convolution call (causal padding, groups, the channels-first 1-D bias) with the masked kernel."""

    def call(self, inputs, training=None):
        if self._is_causal:  # Conv1D's causal padding
            inputs = tf.pad(inputs, self._compute_causal_padding(inputs))
        kernel = self.masked_kernel(training)
        if self.groups > 1:  # Keras compiles grouped convolutions for the CPU.
            outputs = self._jit_compiled_convolution_op(inputs, kernel)
        else:
            outputs = self.convolution_op(inputs, kernel)
        if self.use_bias:
            if self.rank == 1 and self._channels_first:  # bias_add takes no 1-D channels-first tensor
                outputs += tf.reshape(self.bias, (1, self.filters, 1))
            else:
                outputs = tf.nn.bias_add(outputs, self.bias, data_format=self._tf_data_format)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv1D(_MaskedConvolution, keras.layers.Conv1D):
    """``keras.layers.Conv1D`` with a 0/1 kernel mask."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(_MaskedConvolution, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a 0/1 kernel mask."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv3D(_MaskedConvolution, keras.layers.Conv3D):
    """``keras.layers.Conv3D`` with a 0/1 kernel mask."""


MASKED_CONVOLUTIONS = (MaskedConv1D, MaskedConv2D, MaskedConv3D)
MASKED_LAYER_TYPES = (MaskedDense, *MASKED_CONVOLUTIONS)
# Plain Keras layer type -> masked twin; exact types only, so subclasses with their own semantics
# (Conv2DTranspose, DepthwiseConv2D subclass Conv2D) are left alone.
MASKED_TWIN = {keras.layers.Dense: MaskedDense, keras.layers.Conv1D: MaskedConv1D, keras.layers.Conv2D: MaskedConv2D,
               keras.layers.Conv3D: MaskedConv3D}
PLAIN_TWIN = {masked: plain for plain, masked in MASKED_TWIN.items()}


def is_masked(layer) -> bool:
    return isinstance(layer, MASKED_LAYER_TYPES)


def unwrapped(layer):
    """The layer a TFMOT quantization wrapper (an int8 search's twin) wraps; any other layer itself."""
    return layer.layer if type(layer).__name__.startswith("QuantizeWrapper") else layer


def walk_layers(model):
    """Every non-model layer of ``model``, nested models flattened, quantization wrappers unwrapped."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)
        else:
            yield unwrapped(layer)


def masked_layers(model) -> list:
    """Every masked layer of ``model``, nested models included, in layer order."""
    layers = [l for l in walk_layers(model) if is_masked(l)]
    seen = {}
    for layer in layers:
        if layer.name in seen:
            raise LtKerasError(
                f"two masked layers are both named {layer.name!r}; give every layer a "
                "unique name so that mask keys are stable."
            )
        seen[layer.name] = layer
    return layers
