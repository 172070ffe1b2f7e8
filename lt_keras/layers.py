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

Which mask multiplies the kernel is the business of the layer's mask source
(``lt_keras.mask_sources``); a new kind of mask is a new source, returned by
``make_mask_source``. The variable set and its creation order depend on
``get_config()`` alone, so ``.keras`` files (which store variables by
creation order) round-trip.

``mask0`` says what pruned positions hold (Zhou et al.'s mask-0 actions,
``lt_keras.actions``): ``"zero"`` (default), or one of the ``freeze_init``
family, where they keep frozen values stored in a non-trainable
``kernel_frozen`` (set to the kernel when the layer is built or converted;
IMP sets it to theta_0, with the zeros the action asks for).

``mask_mode`` picks the source and turns a layer into a supermask layer:
``"fixed"`` (default) uses ``kernel_mask`` alone; ``"bernoulli"`` (Zhou et
al.) samples mask ~ Bernoulli(sigmoid(kernel_scores)) and ``"topk"``
(edge-popup) keeps the ``keep_fraction`` largest |kernel_scores|, both with
straight-through gradients to the trainable ``kernel_scores``, while kernel
and bias are frozen. ``kernel_mask`` still multiplies in (a supermask can be
learned inside a ticket). ``eval_mask`` picks the inference mask:
``"sampled"``, ``"expected"`` (sigmoid(scores) > 0.5) or ``"topk"``.

A layer with several kernels is a container of masked layers, one kernel
each (``MASKED_CONTAINERS``): ``MaskedMultiHeadAttention`` (four
``MaskedEinsumDense`` projections), ``MaskedSeparableConv2D`` (a masked
depthwise and a masked 1x1 convolution) and ``MaskedSimpleRNN`` /
``MaskedGRU`` / ``MaskedLSTM`` (their cells' input and recurrent kernels as
``MaskedRecurrentKernel`` parts). ``walk_layers`` yields their parts,
so masks, searches and conversions need nothing else; ``parts`` pairs them
with the kernels of the plain layer they convert from and strip back to.
"""
import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.actions import check_mask0
from lt_keras.errors import LtKerasError
from lt_keras.mask_sources import MASK_SOURCES, check_options
from lt_keras.patterns import SparsityPattern

_PACKAGE = "lt_keras"


MASK_OPTIONS = ("mask0", "mask_mode", "keep_fraction", "score_init", "eval_mask", "dynamic_weight_rescaling",
                "sample_seed", "sparsity_pattern")


class MaskedKernelMixin:
    """Adds ``kernel_mask``, a mask source (``lt_keras.mask_sources``) and the masked-kernel computation to a
    Keras layer. ``KERNEL`` names the weight that is masked; a layer whose weight is not ``kernel``
    (``depthwise_kernel``, ``embeddings``) reads it as ``kernel`` too."""

    KERNEL = "kernel"
    use_bias = False  # a layer without a bias (Embedding); Keras layers with one set it
    fan_in_by_out = True  # the kernel is (..., fan_in, out): sparsity patterns (lt_keras.patterns) apply

    def __init__(self, *args, mask0="zero", mask_mode="fixed", keep_fraction=0.5, score_init=0.0,
                 eval_mask=None, dynamic_weight_rescaling=False, sample_seed=0, sparsity_pattern="unstructured",
                 **kwargs):
        super().__init__(*args, **kwargs)  # the Keras layer (Dense / Conv2D) next in the MRO
        self._init_mask_options(mask0, mask_mode, keep_fraction, score_init, eval_mask, dynamic_weight_rescaling,
                                sample_seed, sparsity_pattern)

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
                           eval_mask=None, dynamic_weight_rescaling=False, sample_seed=0,
                           sparsity_pattern="unstructured"):
        check_mask0(mask0)
        eval_mask = check_options(mask_mode, eval_mask, keep_fraction, sparsity_pattern=sparsity_pattern)
        self.sparsity_pattern = SparsityPattern.parse(sparsity_pattern).text
        self.mask0, self.mask_mode, self.eval_mask = mask0, mask_mode, eval_mask
        self.keep_fraction, self.score_init = float(keep_fraction), float(score_init)
        self.dynamic_weight_rescaling = bool(dynamic_weight_rescaling)
        self.sample_seed = int(sample_seed)
        self.kernel_frozen = self.kernel_scores = self.sample_count = None
        object.__setattr__(self, "mask_source", self.make_mask_source())  # a plain object: not tracked by Keras

    def make_mask_source(self):
        """The source of this layer's mask, by ``mask_mode``; a layer with a new kind of mask overrides this."""
        return MASK_SOURCES[self.mask_mode](self)

    @property
    def output_channels(self) -> int:
        """How many outputs (units, filters, embedding dimensions) the masked kernel feeds: each needs a weight."""
        return int(self.kernel.shape[-1])

    def _mask_config(self, config):
        config.update({name: getattr(self, name) for name in MASK_OPTIONS})
        if config["sparsity_pattern"] == "unstructured":  # added later: files written before it stay the same
            del config["sparsity_pattern"]
        return config

    @property
    def is_supermask(self):
        return self.mask_source.learns

    def add_weight(self, name=None, *args, **kwargs):
        # A supermask layer learns only its scores: the parent's kernel and bias are created frozen.
        source = getattr(self, "mask_source", None)
        if name in (self.KERNEL, "bias") and source is not None and source.learns:
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
        if self.mask0 != "zero":
            self.kernel_frozen = self.add_weight(
                name="kernel_frozen", shape=self.kernel.shape, dtype=self.kernel.dtype,
                initializer="zeros", trainable=False)
            self.kernel_frozen.assign(self.kernel)
        self.mask_source.add_variables()

    def hard_mask(self):
        """The 0/1 mask a ticket keeps: kernel_mask (times the expected or top-k supermask)."""
        return self.mask_source.hard_mask()

    def effective_mask(self, training=None):
        """The 0/1 tensor the kernel is multiplied by in this forward pass (straight-through for a supermask)."""
        return self.mask_source.mask(training)

    def use_kernel_once(self, kernel):
        """Compute the next call with ``kernel`` in place of the kernel variable, which stays untouched.

        TFMOT's quantization wrapper (``lt_keras.quantize``) hands in the
        quantized kernel this way before every call it makes.
        """
        object.__setattr__(self, "_kernel_once", kernel)  # a tensor of one call: not tracked by Keras

    def masked_kernel(self, training=None):
        """``kernel * mask`` (plus frozen values where pruned): the kernel the layer computes with, from its
        mask source."""
        override = getattr(self, "_kernel_once", None)
        if override is not None:
            object.__setattr__(self, "_kernel_once", None)
        return self.mask_source.kernel(training, override)

    def store_zeros(self):
        """Write zeros at the stored kernel's pruned positions (after weights were set by other means)."""
        if self.kernel_frozen is None:
            self.kernel.assign(self.kernel * tf.cast(self.kernel_mask, self.kernel.dtype))

    def load_own_variables(self, store):
        """Load from a ``.keras`` file, then store zeros where pruned (files of older versions kept values)."""
        super().load_own_variables(store)
        self.store_zeros()

    def deterministic_kernel(self):
        """The kernel a ticket or an export keeps: the hard (expected / top-k) mask, no sampling."""
        return self.compose(tf.cast(self.hard_mask(), self.kernel.dtype))

    def compose(self, mask, kernel=None):
        """``kernel`` (default: the layer's) times ``mask``, rescaled and with frozen values where pruned."""
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


def _add_bias_and_activate(layer, outputs):
    """Keras's convolution tail: the bias (by data format) and the activation."""
    if layer.use_bias:
        if layer.rank == 1 and layer._channels_first:  # bias_add takes no 1-D channels-first tensor
            outputs += tf.reshape(layer.bias, (1, layer.filters, 1))
        else:
            outputs = tf.nn.bias_add(outputs, layer.bias, data_format=layer._tf_data_format)
    return outputs if layer.activation is None else layer.activation(outputs)


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
        return _add_bias_and_activate(self, outputs)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv1D(_MaskedConvolution, keras.layers.Conv1D):
    """``keras.layers.Conv1D`` with a 0/1 kernel mask."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(_MaskedConvolution, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a 0/1 kernel mask."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv3D(_MaskedConvolution, keras.layers.Conv3D):
    """``keras.layers.Conv3D`` with a 0/1 kernel mask."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedDepthwiseConv2D(MaskedKernelMixin, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with a 0/1 mask on its ``depthwise_kernel``."""

    KERNEL = "depthwise_kernel"
    fan_in_by_out = False
    kernel = property(lambda self: self.depthwise_kernel)
    output_channels = property(lambda self: int(self.kernel.shape[-2] * self.kernel.shape[-1]))

    def call(self, inputs, training=None):
        outputs = keras.backend.depthwise_conv2d(inputs, self.masked_kernel(training), strides=self.strides,
                                                 padding=self.padding, dilation_rate=self.dilation_rate,
                                                 data_format=self.data_format)
        return _add_bias_and_activate(self, outputs)


def _transposed_length(size, kernel, stride, dilation, padding, output_padding):
    """Keras's ``deconv_output_length``: the output length of a transposed convolution along one axis."""
    kernel = kernel + (kernel - 1) * (dilation - 1)
    if output_padding is None:
        return size * stride + max(kernel - stride, 0) if padding == "valid" else size * stride
    pad = kernel // 2 if padding == "same" else 0
    return (size - 1) * stride + kernel - 2 * pad + output_padding


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv2DTranspose(MaskedKernelMixin, keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with a 0/1 kernel mask (Keras's call, computing with the masked kernel)."""

    output_channels = property(lambda self: int(self.kernel.shape[-2]))  # the kernel is (h, w, out, in)
    fan_in_by_out = False

    def call(self, inputs, training=None):
        dynamic, static = tf.shape(inputs), inputs.shape.as_list() if inputs.shape.rank else [None] * 4
        axes = (2, 3) if self.data_format == "channels_first" else (1, 2)
        sizes = [_transposed_length(static[a] if static[a] is not None else dynamic[a], k, s, d, self.padding, p)
                 for a, k, s, d, p in zip(axes, self.kernel_size, self.strides, self.dilation_rate,
                                          self.output_padding or (None, None))]
        shape = ((dynamic[0], self.filters, *sizes) if self.data_format == "channels_first"
                 else (dynamic[0], *sizes, self.filters))
        outputs = keras.backend.conv2d_transpose(inputs, self.masked_kernel(training), tf.stack(shape),
                                                 strides=self.strides, padding=self.padding,
                                                 data_format=self.data_format, dilation_rate=self.dilation_rate)
        if not tf.executing_eagerly() and inputs.shape.rank:
            outputs.set_shape(self.compute_output_shape(inputs.shape))
        return _add_bias_and_activate(self, outputs)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedEmbedding(MaskedKernelMixin, keras.layers.Embedding):
    """``keras.layers.Embedding`` with a 0/1 mask on its ``embeddings`` table (dense integer inputs)."""

    KERNEL = "embeddings"
    fan_in_by_out = False
    kernel = property(lambda self: self.embeddings)

    def call(self, inputs, training=None):
        if isinstance(inputs, tf.SparseTensor) or self.sparse:
            raise TypeError(f"{type(self).__name__} {self.name!r} takes dense integer ids and gives dense outputs.")
        if inputs.dtype not in (tf.int32, tf.int64):
            inputs = tf.cast(inputs, tf.int32)
        table = self.masked_kernel(training)
        if self._use_one_hot_matmul:
            out = tf.matmul(tf.one_hot(inputs, depth=self.input_dim, dtype=table.dtype), table)
        else:
            out = tf.nn.embedding_lookup(table, inputs)
        return tf.cast(out, self._dtype_policy.compute_dtype)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedEinsumDense(MaskedKernelMixin, keras.layers.EinsumDense):
    """``keras.layers.EinsumDense`` with a 0/1 kernel mask (the projections of attention layers among others)."""

    fan_in_by_out = False  # the kernel's axes follow the equation: sparsity patterns do not apply
    use_bias = property(lambda self: getattr(self, "bias", None) is not None)

    @property
    def output_channels(self) -> int:
        """The kernel's entries per input position: the product of its axes that reach the output."""
        inputs, output = self.equation.split("->")
        kernel_axes = inputs.split(",")[1].replace("...", "")
        return int(np.prod([n for axis, n in zip(kernel_axes, self.kernel.shape) if axis in output]))

    def call(self, inputs, training=None):
        outputs = tf.einsum(self.equation, inputs, self.masked_kernel(training))
        if self.bias is not None:
            outputs += self.bias
        return outputs if self.activation is None else self.activation(outputs)


class _PartsOptions:
    """A layer of masked parts: takes the masked-layer options (``MASK_OPTIONS``) for its parts (``take_options``
    may refuse some) and keeps them in its config."""

    @staticmethod
    def take_options(kwargs) -> dict:
        return {name: kwargs.pop(name) for name in MASK_OPTIONS if name in kwargs}

    def __init__(self, *args, **kwargs):
        options = self.take_options(kwargs)
        super().__init__(*args, **kwargs)
        self.mask_options = options

    def get_config(self):
        return {**super().get_config(), **self.mask_options}


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedMultiHeadAttention(_PartsOptions, keras.layers.MultiHeadAttention):
    """``keras.layers.MultiHeadAttention`` whose query, key, value and output projections are
    ``MaskedEinsumDense`` layers named ``<layer>_query`` ... ``<layer>_attention_output`` (unique mask keys).

    The layer holds no kernel of its own: ``walk_layers`` yields its four projections, so masks, pruning,
    supermask modes and conversion see them like any masked layer."""

    SUBLAYERS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")

    def _build_from_signature(self, query, value, key=None):
        super()._build_from_signature(query, value, key)
        for attribute in self.SUBLAYERS:
            plain = getattr(self, attribute)
            config = dict(plain.get_config(), name=f"{self.name}_{plain.name}", **self.mask_options)
            setattr(self, attribute, MaskedEinsumDense.from_config(config))


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedSeparableConv2D(_PartsOptions, keras.layers.SeparableConv2D):
    """``keras.layers.SeparableConv2D`` computed as TensorFlow computes it, a depthwise then a 1x1 convolution,
    each a masked layer of its own: ``<layer>_depthwise`` (``MaskedDepthwiseConv2D``) and ``<layer>_pointwise``
    (``MaskedConv2D`` with the bias and the activation). ``walk_layers`` yields the two, so masks, pruning and
    conversion see two masked kernels; ``strip_masks`` gives back one plain SeparableConv2D."""

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        self.depthwise = MaskedDepthwiseConv2D(
            self.kernel_size, strides=self.strides, padding=self.padding, depth_multiplier=self.depth_multiplier,
            data_format=self.data_format, dilation_rate=self.dilation_rate, use_bias=False,
            depthwise_initializer=self.depthwise_initializer, depthwise_regularizer=self.depthwise_regularizer,
            depthwise_constraint=self.depthwise_constraint, name=f"{self.name}_depthwise", dtype=self._dtype_policy,
            **self.mask_options)
        self.pointwise = MaskedConv2D(
            self.filters, 1, data_format=self.data_format, activation=self.activation, use_bias=self.use_bias,
            kernel_initializer=self.pointwise_initializer, kernel_regularizer=self.pointwise_regularizer,
            kernel_constraint=self.pointwise_constraint, bias_initializer=self.bias_initializer,
            bias_regularizer=self.bias_regularizer, bias_constraint=self.bias_constraint,
            name=f"{self.name}_pointwise", dtype=self._dtype_policy, **self.mask_options)
        self.depthwise.build(shape)
        self.pointwise.build(self.depthwise.compute_output_shape(shape))
        self.built = True

    def call(self, inputs, training=None):
        return self.pointwise(self.depthwise(inputs, training=training), training=training)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedRecurrentKernel(MaskedKernelMixin, keras.layers.Layer):
    """One kernel of a recurrent cell (its input or its recurrent kernel) with a 0/1 mask, and the cell's bias
    beside the recurrent one; never called: the cell computes with ``masked_kernel()``."""

    fan_in_by_out = False  # columns are gates x units: sparsity patterns do not apply
    use_bias = property(lambda self: getattr(self, "bias", None) is not None)

    def __init__(self, kernel_shape=(1, 1), initializer="glorot_uniform", regularizer=None, constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_shape, self.initializer = tuple(kernel_shape), keras.initializers.get(initializer)
        self.regularizer, self.constraint = keras.regularizers.get(regularizer), keras.constraints.get(constraint)

    def build(self, input_shape=None):
        self.kernel = self.add_weight("kernel", shape=self.kernel_shape, initializer=self.initializer,
                                      regularizer=self.regularizer, constraint=self.constraint)
        self._build_mask()
        self.built = True


class _RecurrentOptions(_PartsOptions):
    """The options of a recurrent layer or cell: a sampled (Bernoulli) supermask is refused."""

    @staticmethod
    def take_options(kwargs) -> dict:
        options = _PartsOptions.take_options(kwargs)
        if options.get("mask_mode") == "bernoulli":
            raise LtKerasError("a recurrent layer takes fixed and top-k masks, not Bernoulli supermasks: a sampled "
                               "mask would be drawn again at every step the cell reads its kernels.")
        return options


class _MaskedCell(_RecurrentOptions):
    """A recurrent cell whose ``kernel`` and ``recurrent_kernel`` live in ``MaskedRecurrentKernel`` parts named
    ``<layer>_kernel`` and ``<layer>_recurrent_kernel`` (the bias in the second); reading ``cell.kernel`` gives
    the masked kernel, so the cell's step and the layer's fused kernels both compute with it."""

    def __init__(self, *args, parts_prefix="cell", **kwargs):
        super().__init__(*args, **kwargs)
        self.parts_prefix = parts_prefix

    kernel = property(lambda self: self._masked("kernel"), lambda self, variable: None)
    recurrent_kernel = property(lambda self: self._masked("recurrent_kernel"), lambda self, variable: None)

    def _masked(self, name):
        return getattr(self, f"_{name}_part").masked_kernel(getattr(self, "_step_training", None))

    def add_weight(self, name=None, shape=None, initializer=None, regularizer=None, constraint=None, **kwargs):
        if name in ("kernel", "recurrent_kernel"):
            part = MaskedRecurrentKernel(shape, initializer, regularizer, constraint,
                                         name=f"{self.parts_prefix}_{name}", **self.mask_options)
            part.build()
            setattr(self, f"_{name}_part", part)
            return part.kernel
        if name == "bias":  # beside the recurrent kernel, so conversions carry it with that part
            part = self._recurrent_kernel_part
            part.bias = part.add_weight("bias", shape=shape, initializer=initializer, regularizer=regularizer,
                                        constraint=constraint)
            return part.bias
        return super().add_weight(name, shape, initializer=initializer, regularizer=regularizer,
                                  constraint=constraint, **kwargs)

    def call(self, inputs, states, training=None):
        object.__setattr__(self, "_step_training", training)
        return super().call(inputs, states, training=training)

    def get_config(self):
        return {**super().get_config(), "parts_prefix": self.parts_prefix}


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedSimpleRNNCell(_MaskedCell, keras.layers.SimpleRNNCell):
    """``keras.layers.SimpleRNNCell`` with masked kernels (``_MaskedCell``)."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedGRUCell(_MaskedCell, keras.layers.GRUCell):
    """``keras.layers.GRUCell`` with masked kernels (``_MaskedCell``)."""


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedLSTMCell(_MaskedCell, keras.layers.LSTMCell):
    """``keras.layers.LSTMCell`` with masked kernels (``_MaskedCell``)."""


class _MaskedRecurrent(_RecurrentOptions):
    """A SimpleRNN / GRU / LSTM layer whose cell is the masked twin (``CELL``): its input and recurrent kernels
    are masked layers of their own, ``<layer>_kernel`` and ``<layer>_recurrent_kernel``."""

    CELL = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cell = self.CELL.from_config({**self.cell.get_config(), **self.mask_options, "parts_prefix": self.name})

    def call(self, inputs, mask=None, training=None, initial_state=None):
        object.__setattr__(self.cell, "_step_training", training)  # the fused kernels read cell.kernel here
        return super().call(inputs, mask=mask, training=training, initial_state=initial_state)


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedSimpleRNN(_MaskedRecurrent, keras.layers.SimpleRNN):
    """``keras.layers.SimpleRNN`` with masked input and recurrent kernels."""

    CELL = MaskedSimpleRNNCell


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedGRU(_MaskedRecurrent, keras.layers.GRU):
    """``keras.layers.GRU`` with masked input and recurrent kernels."""

    CELL = MaskedGRUCell


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedLSTM(_MaskedRecurrent, keras.layers.LSTM):
    """``keras.layers.LSTM`` with masked input and recurrent kernels."""

    CELL = MaskedLSTMCell


class KernelView:
    """One kernel (and its bias) of a plain layer that holds two (SeparableConv2D's depthwise and pointwise
    kernels), seen by conversions and exports as a layer of its own."""

    def __init__(self, name, kernel_name, kernel, bias=None):
        self.name, self.KERNEL, self.bias, self.use_bias = name, kernel_name, bias, bias is not None
        setattr(self, kernel_name, kernel)
        self.weights = [kernel] + ([bias] if bias is not None else [])

    def get_weights(self):
        return [variable.numpy() for variable in self.weights]

    def set_weights(self, values):
        for variable, value in zip(self.weights, values, strict=True):
            variable.assign(value)


MASKED_CONVOLUTIONS = (MaskedConv1D, MaskedConv2D, MaskedConv3D, MaskedDepthwiseConv2D, MaskedConv2DTranspose)
MASKED_LAYER_TYPES = (MaskedDense, *MASKED_CONVOLUTIONS, MaskedEmbedding, MaskedEinsumDense, MaskedRecurrentKernel)
# Plain Keras layer type -> masked twin; exact types only, so subclasses with their own semantics are left alone.
MASKED_TWIN = {keras.layers.Dense: MaskedDense, keras.layers.Conv1D: MaskedConv1D, keras.layers.Conv2D: MaskedConv2D,
               keras.layers.Conv3D: MaskedConv3D, keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
               keras.layers.Conv2DTranspose: MaskedConv2DTranspose, keras.layers.Embedding: MaskedEmbedding,
               keras.layers.EinsumDense: MaskedEinsumDense, keras.layers.MultiHeadAttention: MaskedMultiHeadAttention,
               keras.layers.SeparableConv2D: MaskedSeparableConv2D, keras.layers.SimpleRNN: MaskedSimpleRNN,
               keras.layers.GRU: MaskedGRU, keras.layers.LSTM: MaskedLSTM}
MASKED_RECURRENT = (MaskedSimpleRNN, MaskedGRU, MaskedLSTM)
# No kernel of their own: masked parts
MASKED_CONTAINERS = (MaskedMultiHeadAttention, MaskedSeparableConv2D, *MASKED_RECURRENT)
PLAIN_TWIN = {masked: plain for plain, masked in MASKED_TWIN.items()}


def is_masked(layer) -> bool:
    return isinstance(layer, MASKED_LAYER_TYPES)


def unwrapped(layer):
    """The layer a TFMOT quantization wrapper (an int8 search's twin) wraps; any other layer itself."""
    return layer.layer if type(layer).__name__.startswith("QuantizeWrapper") else layer


def parts(layer) -> list:
    """The layers that hold ``layer``'s kernels: an attention layer's projections, a separable convolution's
    depthwise and pointwise layers (``KernelView``s of a plain one), else the layer itself."""
    if isinstance(layer, keras.layers.MultiHeadAttention) and getattr(layer, "_built_from_signature", False):
        return [getattr(layer, attribute) for attribute in MaskedMultiHeadAttention.SUBLAYERS]
    if isinstance(layer, MaskedSeparableConv2D) and layer.built:
        return [layer.depthwise, layer.pointwise]
    if isinstance(layer, MASKED_RECURRENT) and layer.built:
        return [layer.cell._kernel_part, layer.cell._recurrent_kernel_part]
    if type(layer) in (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM) and layer.built:
        cell = layer.cell
        return [KernelView(f"{layer.name}_kernel", "kernel", cell.kernel),
                KernelView(f"{layer.name}_recurrent_kernel", "kernel", cell.recurrent_kernel,
                           cell.bias if cell.use_bias else None)]
    if type(layer) is keras.layers.SeparableConv2D and layer.built:
        return [KernelView(f"{layer.name}_depthwise", "depthwise_kernel", layer.depthwise_kernel),
                KernelView(f"{layer.name}_pointwise", "kernel", layer.pointwise_kernel,
                           layer.bias if layer.use_bias else None)]
    return [layer]


def walk_layers(model, expand=True):
    """Every non-model layer of ``model``, nested models flattened, quantization wrappers unwrapped, a masked
    attention layer or separable convolution as its masked parts (``expand=False``: as itself)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, expand)
        elif expand and isinstance(unwrapped(layer), MASKED_CONTAINERS):
            yield from parts(unwrapped(layer))
        else:
            yield unwrapped(layer)


def kernel_of(layer):
    """The kernel variable of a masked or plain weight layer (``depthwise_kernel``, ``embeddings``), or None."""
    twin = layer if is_masked(layer) or isinstance(layer, KernelView) else MASKED_TWIN.get(type(layer))
    name = getattr(twin, "KERNEL", None)
    return None if name is None else getattr(layer, name, None)


def weight_layers(model) -> list:
    """(name, layer) of every layer of ``model`` with a kernel ``kernel_of`` finds, masked or plain, in one order
    for a masked model and its stripped twin: an attention layer as its projections, named as masked ones are
    (``<attention>_query``)."""
    out = []
    for layer in walk_layers(model):
        pieces = parts(layer)
        for piece in pieces:
            if kernel_of(piece) is not None:
                plain_part = piece is not layer and isinstance(piece, keras.layers.Layer) and not is_masked(piece)
                out.append((f"{layer.name}_{piece.name}" if plain_part else piece.name, piece))
    return out


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
