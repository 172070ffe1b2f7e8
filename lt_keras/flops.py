"""Training FLOPs of a Keras model, counted from its layers' shapes.

Per example, forward: a convolution (1-D, 2-D, 3-D) 2 x output positions x kernel size (+ bias), a
depthwise one 2 x output elements x kernel window, a separable one its depthwise and 1x1 parts, a
transposed one 2 x input positions x kernel size, Dense 2*in*out (+ bias), an embedding lookup nothing
(attention and EinsumDense are not counted), BatchNormalization 4 per element (inference
affine plus statistics), ReLU/pooling/add 1 per output element. Backward is
counted as twice the forward (gradients w.r.t. inputs and weights), so a
training step costs 3x forward x batch. Unstructured masks do not change the
count (dense kernels still run); a slimmed model is counted at its real,
smaller shapes. The same rules apply to every model, so ratios are fair.
"""
import numpy as np

from lt_keras._keras import keras
from lt_keras.layers import kernel_of, parts, walk_layers


def _elements(shape):
    return int(np.prod([d for d in shape[1:] if d is not None]))


def _output_shape(layer):
    shape = layer.output_shape
    return shape[0] if isinstance(shape, list) else shape


def forward_flops_per_example(model) -> int:
    total = 0
    for layer in walk_layers(model, expand=False):
        out = _output_shape(layer)
        if isinstance(layer, keras.layers.SeparableConv2D):  # plain or masked: a depthwise then a 1x1 convolution
            depthwise, pointwise = (kernel_of(part).shape for part in parts(layer))
            positions = _elements(out) // pointwise[-1]
            total += 2 * positions * (depthwise.num_elements() + pointwise.num_elements())
            total += _elements(out) if layer.use_bias else 0
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2 * _elements(out) * int(np.prod(layer.kernel_size)) + (_elements(out) if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            positions = _elements(layer.input_shape) // layer.kernel.shape[-1]  # the kernel is (h, w, out, in)
            total += 2 * positions * layer.kernel.shape.num_elements() + (_elements(out) if layer.use_bias else 0)
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            c_out = layer.kernel.shape[-1]
            groups = max(1, getattr(layer, "groups", 1))
            total += 2 * _elements(out) // c_out * layer.kernel.shape.num_elements() // groups
            total += _elements(out) if layer.use_bias else 0
        elif isinstance(layer, keras.layers.Dense):
            n_in, n_out = layer.kernel.shape
            total += 2 * n_in * n_out + (n_out if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.BatchNormalization):
            total += 4 * _elements(out)
        elif isinstance(layer, (keras.layers.ReLU, keras.layers.Activation, keras.layers.MaxPooling2D,
                                keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D,
                                keras.layers.Add)):
            total += _elements(out)
    return int(total)


def training_flops_per_step(model, batch_size) -> int:
    """Forward + backward (2x forward) FLOPs of one training step of ``batch_size`` examples."""
    return 3 * forward_flops_per_example(model) * batch_size

