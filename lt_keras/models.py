"""The papers' networks, in a registry keyed by name.

Every layer has an explicit name, so mask keys (``"fc1/kernel"``) are stable
across builds, processes and saved files. Builders take ``masked=True`` to use
``MaskedDense``/``MaskedConv2D`` (all-ones masks) and ``masked=False`` for plain
Keras layers, so the same architecture can be compared with and without masks.

- ``lenet_300_100``, ``conv2``, ``conv4``, ``conv6``: Frankle & Carbin (2019),
  Glorot-normal init, 3x3 'same' convolutions, 2x2 max-pool after each pair.
- ``vgg11_bn`` (``vgg11_bn_half``/``_quarter``: narrower, for CPUs), ``vgg16_bn``: the
  CIFAR VGG of network slimming / Early-Bird (conv-BN-ReLU without conv bias, global
  average pool (the 2x2 pool on 32x32 inputs), one linear classifier).
- ``vgg19_bn``: Frankle & Carbin's VGG-19 (section 4), the same VGG with 16 convolutions and
  their Gaussian Glorot init.
- ``resnet20``: He et al. (2016) CIFAR ResNet-20 with projection shortcuts (Frankle & Carbin's
  "Resnet-18": 16/32/64 filters, 3 blocks a stage).
- ``resnet18``, ``resnet50``: the ImageNet ResNets of torchvision (open_lth's and You et al.'s), for
  224x224 inputs.

``text_encoder`` (outside the registry, which holds image models) is a small transformer encoder of plain
Keras layers, the text model of the layer-coverage tests and figures.
"""
import functools

from lt_keras._keras import keras
from lt_keras.distribute import several_replicas
from lt_keras.errors import LtKerasError
from lt_keras.layers import MaskedConv2D, MaskedDense

_REGISTRY = {}


def register(name):
    def wrap(builder):
        _REGISTRY[name] = builder
        return builder

    return wrap


def model_names():
    return sorted(_REGISTRY)


def build_model(name, input_shape, num_classes, masked=True, **layer_options):
    """Build registered model ``name`` for inputs of ``input_shape``; ``layer_options`` (``mask0``, the
    supermask options of ``lt_keras.layers``) go to every masked layer as it is built, so a search needs no
    converting clone."""
    if name not in _REGISTRY:
        raise LtKerasError(f"unknown model {name!r}; choose one of {model_names()}.")
    if layer_options and not masked:
        raise LtKerasError(f"masked layer options {sorted(layer_options)} need masked=True.")
    return _REGISTRY[name](input_shape=tuple(input_shape), num_classes=num_classes,
                           masked=dict(layer_options) if layer_options else masked)


def parameter_count(model) -> int:
    """Weights of the network itself: masks (and other mask state) excluded."""
    return int(sum(int(w.shape.num_elements()) for w in model.weights
                   if "kernel_mask" not in w.name and "sample_count" not in w.name))


def _batch_norm(**kwargs):
    """PyTorch's BatchNorm settings; under a strategy of several replicas the statistics are the global batch's
    (synchronized across replicas), so a mirrored search computes what one device does."""
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, synchronized=several_replicas(), **kwargs)


def _layers(masked):
    """The dense and conv layer classes of a build: plain, masked, or masked with options (a dict)."""
    if not masked:
        return keras.layers.Dense, keras.layers.Conv2D
    if isinstance(masked, dict):
        return functools.partial(MaskedDense, **masked), functools.partial(MaskedConv2D, **masked)
    return MaskedDense, MaskedConv2D


def _fc_head(x, dense, widths, num_classes, init):
    for i, width in enumerate(widths, start=1):
        x = dense(width, activation="relu", kernel_initializer=init, name=f"fc{i}")(x)
    return dense(num_classes, kernel_initializer=init, name="output")(x)


@register("lenet_300_100")
def lenet_300_100(input_shape=(28, 28, 1), num_classes=10, masked=True):
    dense, _ = _layers(masked)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    outputs = _fc_head(x, dense, (300, 100), num_classes, "glorot_normal")
    return keras.Model(inputs, outputs, name="lenet_300_100")


def _conv_net(name, filters, input_shape, num_classes, masked):
    dense, conv = _layers(masked)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for block, width in enumerate(filters, start=1):
        for j in (1, 2):
            x = conv(
                width,
                3,
                padding="same",
                activation="relu",
                kernel_initializer="glorot_normal",
                name=f"conv{2 * block - 2 + j}",
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = _fc_head(x, dense, (256, 256), num_classes, "glorot_normal")
    return keras.Model(inputs, outputs, name=name)


@register("conv2")
def conv2(input_shape=(32, 32, 3), num_classes=10, masked=True):
    return _conv_net("conv2", (64,), input_shape, num_classes, masked)


@register("conv4")
def conv4(input_shape=(32, 32, 3), num_classes=10, masked=True):
    return _conv_net("conv4", (64, 128), input_shape, num_classes, masked)


@register("conv6")
def conv6(input_shape=(32, 32, 3), num_classes=10, masked=True):
    return _conv_net("conv6", (64, 128, 256), input_shape, num_classes, masked)


VGG_CONFIGS = {
    "vgg11_bn": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16_bn": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19_bn": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


def _vgg(name, input_shape, num_classes, masked, width=1.0, config=None, init="slimming"):
    """VGG-BN from ``VGG_CONFIGS[config or name]`` with every conv's filters scaled by ``width``.

    ``init="slimming"``: network slimming's (and Early-Bird's) He normal over fan-out, BN scales 0.5 (so
    the L1 penalty separates unimportant channels early), classifier N(0, 0.01); ``"glorot"``: Frankle &
    Carbin's Gaussian Glorot everywhere, BN scales 1.
    """
    dense, conv = _layers(masked)
    gamma = 0.5 if init == "slimming" else 1.0

    def conv_init():  # a fresh initializer per layer: Keras repeats an unseeded instance's values
        if init == "glorot":
            return keras.initializers.GlorotNormal()
        return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    conv_index = pool_index = 0
    for item in VGG_CONFIGS[config or name]:
        if item == "M":
            pool_index += 1
            x = keras.layers.MaxPooling2D(2, name=f"pool{pool_index}")(x)
            continue
        conv_index += 1
        x = conv(max(1, int(round(item * width))), 3, padding="same", use_bias=False, kernel_initializer=conv_init(),
                 name=f"conv{conv_index}")(x)
        x = _batch_norm(name=f"bn{conv_index}", gamma_initializer=keras.initializers.Constant(gamma))(x)
        x = keras.layers.ReLU(name=f"relu{conv_index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)  # = 2x2 average pool on 32x32 inputs
    x = keras.layers.Flatten(name="flatten")(x)
    head_init = keras.initializers.GlorotNormal() if init == "glorot" else keras.initializers.RandomNormal(0.0, 0.01)
    outputs = dense(num_classes, kernel_initializer=head_init, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


@register("vgg11_bn")
def vgg11_bn(input_shape=(32, 32, 3), num_classes=10, masked=True):
    return _vgg("vgg11_bn", input_shape, num_classes, masked)


@register("vgg11_bn_quarter")
def vgg11_bn_quarter(input_shape=(32, 32, 3), num_classes=10, masked=True):
    """VGG-11-BN at a quarter of the widths (16 to 128 filters): the CPU-sized Early-Bird network."""
    return _vgg("vgg11_bn_quarter", input_shape, num_classes, masked, width=0.25, config="vgg11_bn")


@register("vgg11_bn_half")
def vgg11_bn_half(input_shape=(32, 32, 3), num_classes=10, masked=True):
    """VGG-11-BN at half the widths (32 to 256 filters)."""
    return _vgg("vgg11_bn_half", input_shape, num_classes, masked, width=0.5, config="vgg11_bn")


@register("vgg16_bn")
def vgg16_bn(input_shape=(32, 32, 3), num_classes=10, masked=True):
    return _vgg("vgg16_bn", input_shape, num_classes, masked)


@register("vgg19_bn")
def vgg19_bn(input_shape=(32, 32, 3), num_classes=10, masked=True):
    """Frankle & Carbin's VGG-19 (section 4; the CIFAR VGG of Liu et al. 2019, with BatchNorm), Glorot init."""
    return _vgg("vgg19_bn", input_shape, num_classes, masked, init="glorot")


@register("resnet20")
def resnet20(input_shape=(32, 32, 3), num_classes=10, masked=True):
    """ResNet-20: 3 stages x 3 basic blocks, widths 16/32/64, 1x1 projection shortcuts."""
    dense, conv = _layers(masked)

    def conv_bn(x, filters, kernel, stride, name, relu=True):
        x = conv(filters, kernel, strides=stride, padding="same", use_bias=False,
                 kernel_initializer="he_normal", name=name)(x)
        x = _batch_norm(name=name + "_bn")(x)
        return keras.layers.ReLU(name=name + "_relu")(x) if relu else x

    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, 16, 3, 1, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in (1, 2, 3):
            stride = 2 if stage > 1 and block == 1 else 1
            prefix = f"stage{stage}_block{block}"
            shortcut = x
            y = conv_bn(x, filters, 3, stride, prefix + "_conv1")
            y = conv_bn(y, filters, 3, 1, prefix + "_conv2", relu=False)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = conv_bn(x, filters, 1, stride, prefix + "_shortcut", relu=False)
            x = keras.layers.Add(name=prefix + "_add")([shortcut, y])
            x = keras.layers.ReLU(name=prefix + "_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name="resnet20")


def _imagenet_resnet(name, block, blocks_per_stage, input_shape, num_classes, masked):
    """torchvision's ImageNet ResNet (v1.5: a bottleneck strides in its 3x3 conv), as open_lth and You et al. use
    it: bias-free convolutions with Kaiming-normal (fan_out) init, BatchNorm (eps 1e-5, PyTorch momentum 0.1),
    explicit zero padding where a convolution or the stem's pool strides (PyTorch pads both sides), and the
    classifier's PyTorch default init, U(+-1/sqrt(fan_in)) for weights and bias. Layer names follow
    torchvision's (``layer2_0_conv1`` for ``layer2.0.conv1``), so mask keys are stable."""
    dense, conv = _layers(masked)

    def conv_init():  # a fresh initializer per layer: Keras repeats an unseeded instance's values
        return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")

    def conv_bn(x, filters, kernel, stride, prefix, index, relu=True):
        if stride > 1 and kernel > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{prefix}_pad{index}")(x)
        x = conv(filters, kernel, strides=stride, padding="valid" if stride > 1 and kernel > 1 else "same",
                 use_bias=False, kernel_initializer=conv_init(), name=f"{prefix}_conv{index}")(x)
        x = _batch_norm(name=f"{prefix}_bn{index}")(x)
        return keras.layers.ReLU(name=f"{prefix}_relu{index}")(x) if relu else x

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.ZeroPadding2D(3, name="pad1")(inputs)
    x = conv(64, 7, strides=2, use_bias=False, kernel_initializer=conv_init(), name="conv1")(x)
    x = _batch_norm(name="bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    expansion = 4 if block == "bottleneck" else 1
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            prefix = f"layer{stage}_{index}"
            shortcut = x
            if block == "bottleneck":
                y = conv_bn(x, width, 1, 1, prefix, 1)
                y = conv_bn(y, width, 3, stride, prefix, 2)
                y = conv_bn(y, width * expansion, 1, 1, prefix, 3, relu=False)
            else:
                y = conv_bn(x, width, 3, stride, prefix, 1)
                y = conv_bn(y, width, 3, 1, prefix, 2, relu=False)
            if stride != 1 or shortcut.shape[-1] != width * expansion:
                shortcut = conv_bn(x, width * expansion, 1, stride, prefix + "_downsample", 0, relu=False)
            x = keras.layers.Add(name=prefix + "_add")([shortcut, y])
            x = keras.layers.ReLU(name=prefix + "_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    bound = 1.0 / float(x.shape[-1]) ** 0.5
    outputs = dense(num_classes, kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
                    bias_initializer=keras.initializers.RandomUniform(-bound, bound), name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


@register("resnet18")
def resnet18(input_shape=(224, 224, 3), num_classes=1000, masked=True):
    """ResNet-18 (He et al. 2016; torchvision): basic blocks, 2 a stage; 11,689,512 parameters at 1,000
    classes (You et al.'s Early-Bird ImageNet network)."""
    return _imagenet_resnet("resnet18", "basic", (2, 2, 2, 2), input_shape, num_classes, masked)


@register("resnet50")
def resnet50(input_shape=(224, 224, 3), num_classes=1000, masked=True):
    """ResNet-50 (He et al. 2016; torchvision v1.5): bottleneck blocks 3/4/6/3; 25,557,032 parameters at
    1,000 classes (open_lth's ImageNet network, Frankle et al. 2020)."""
    return _imagenet_resnet("resnet50", "bottleneck", (3, 4, 6, 3), input_shape, num_classes, masked)


def text_encoder(sequence_length=16, vocab_size=100, width=32, heads=4, hidden=64, blocks=2, num_classes=3):
    """A small transformer encoder of plain Keras layers (not in the registry: it reads integer token ids, not
    images): an embedding, then per block MultiHeadAttention and a ReLU feed-forward pair, each added to its
    input and LayerNormalization'd, a global average pool and a Dense classifier. ``mask_model`` masks every
    kernel of it (the attention projections as ``MaskedEinsumDense``)."""
    inputs = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, width, name="embed")(inputs)
    for b in range(1, blocks + 1):
        attended = keras.layers.MultiHeadAttention(heads, width // heads, name=f"block{b}_attention")(x, x)
        x = keras.layers.LayerNormalization(name=f"block{b}_norm1")(keras.layers.Add()([x, attended]))
        y = keras.layers.Dense(hidden, activation="relu", name=f"block{b}_ff1")(x)
        y = keras.layers.Dense(width, name=f"block{b}_ff2")(y)
        x = keras.layers.LayerNormalization(name=f"block{b}_norm2")(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(x), name="text_encoder")
