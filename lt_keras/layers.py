"""Keras layers whose kernel is multiplied by a fixed 0/1 mask.

The mask is a non-trainable weight, ``kernel_mask``, created right after the
layer's own variables. The effective kernel ``kernel * kernel_mask`` is formed
in ``call()``; the stored kernel is never overwritten with zeros. That keeps
gradients exact (pruned entries get a zero gradient through the product),
keeps optimizer state and checkpoints honest, and lets a mask be changed or
removed without losing the underlying weights.

Subclasses change *which* mask is used by overriding ``effective_mask`` only;
the variable set and its creation order depend on ``get_config()`` alone, so
``.keras`` files (which store variables by creation order) round-trip.

``mask0`` says what pruned positions hold (Zhou et al.'s mask-0 actions):
``"zero"`` (default) or ``"freeze_init"``, where they keep frozen values
stored in a non-trainable ``kernel_frozen`` (set to the kernel when the
layer is built or converted; IMP sets it to theta_0).
"""
from lt_keras._keras import keras, tf

_PACKAGE = "lt_keras"


MASK0_ACTIONS = ("zero", "freeze_init")


class MaskedKernelMixin:
    """Adds ``kernel_mask`` and the masked-kernel computation to a Keras layer."""

    def _init_mask_options(self, mask0):
        if mask0 not in MASK0_ACTIONS:
            raise ValueError(f"mask0: {mask0!r} is not one of {list(MASK0_ACTIONS)}.")
        self.mask0 = mask0

    def _mask_config(self, config):
        config["mask0"] = self.mask0
        return config

    def _build_mask(self):
        self.kernel_mask = self.add_weight(
            name="kernel_mask",
            shape=self.kernel.shape,
            dtype=self.kernel.dtype,
            initializer="ones",
            trainable=False,
        )
        self.kernel_frozen = None
        if self.mask0 == "freeze_init":
            self.kernel_frozen = self.add_weight(
                name="kernel_frozen", shape=self.kernel.shape, dtype=self.kernel.dtype,
                initializer="zeros", trainable=False)
            self.kernel_frozen.assign(self.kernel)

    def effective_mask(self, training=None):
        """The 0/1 tensor the kernel is multiplied by in this forward pass.

        A fixed mask takes no gradient; ``stop_gradient`` lets TensorFlow skip
        computing one (measured ~6% of a LeNet step without XLA). Learned masks
        (supermasks) override this method and return a differentiable tensor.
        """
        del training
        return tf.stop_gradient(self.kernel_mask)

    def masked_kernel(self, training=None):
        """``kernel * mask`` (plus frozen values where pruned): the kernel the layer computes with."""
        mask = tf.cast(self.effective_mask(training), self.kernel.dtype)
        kernel = self.kernel * mask
        if self.kernel_frozen is not None:
            kernel += tf.stop_gradient(self.kernel_frozen) * (1.0 - mask)
        return kernel


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedDense(MaskedKernelMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with a fixed 0/1 kernel mask."""

    def __init__(self, *args, mask0="zero", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask_options(mask0)

    def get_config(self):
        return self._mask_config(super().get_config())

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask()

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


@keras.utils.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(MaskedKernelMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a fixed 0/1 kernel mask."""

    def __init__(self, *args, mask0="zero", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask_options(mask0)

    def get_config(self):
        return self._mask_config(super().get_config())

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask()

    def call(self, inputs, training=None):
        kernel = self.masked_kernel(training)
        if self.groups > 1:  # Keras compiles grouped convolutions for the CPU.
            outputs = self._jit_compiled_convolution_op(inputs, kernel)
        else:
            outputs = self.convolution_op(inputs, kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias, data_format=self._tf_data_format)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


MASKED_LAYER_TYPES = (MaskedDense, MaskedConv2D)
# Plain Keras layer type -> masked twin; exact types only, so subclasses of
# Dense/Conv2D with their own semantics are left alone.
MASKED_TWIN = {keras.layers.Dense: MaskedDense, keras.layers.Conv2D: MaskedConv2D}
PLAIN_TWIN = {masked: plain for plain, masked in MASKED_TWIN.items()}


def is_masked(layer) -> bool:
    return isinstance(layer, MASKED_LAYER_TYPES)
