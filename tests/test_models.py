"""The model registry: paper architectures, parameter counts, stable names."""
import numpy as np
import pytest

from lt_keras import LtKerasError, masked_layers
from lt_keras.models import build_model, model_names, parameter_count


@pytest.mark.parametrize(
    "name, shape, classes, expected",
    [
        ("lenet_300_100", (28, 28, 1), 10, 266_610),  # Frankle & Carbin: 266K
        ("conv2", (32, 32, 3), 10, 4_301_642),  # 4.3M
        ("conv4", (32, 32, 3), 10, 2_425_930),  # 2.4M
        ("conv6", (32, 32, 3), 10, 2_262_602),  # the stated architecture; the paper's Table 1 prints 1.7M
        ("vgg19_bn", (32, 32, 3), 10, 20_046_026),  # 20.0M (+ BN statistics); Frankle & Carbin: 20M
        ("resnet20", (32, 32, 3), 10, None),
    ],
)
def test_parameter_counts(name, shape, classes, expected):
    model = build_model(name, shape, classes)
    count = parameter_count(model)
    plain = build_model(name, shape, classes, masked=False)
    assert count == plain.count_params()  # masks add no parameters
    if expected is not None:
        assert count == expected
    else:
        assert 270_000 <= count <= 280_000  # ResNet-20 with projection shortcuts: ~0.27M


@pytest.mark.parametrize("name", ["vgg11_bn", "vgg16_bn", "vgg19_bn"])
def test_vgg_bn(name):
    model = build_model(name, (32, 32, 3), 100)
    convs = [l for l in masked_layers(model) if l.name.startswith("conv")]
    assert len(convs) == {"vgg11_bn": 8, "vgg16_bn": 13, "vgg19_bn": 16}[name]
    assert float(model.get_layer("bn1").gamma.numpy()[0]) == (1.0 if name == "vgg19_bn" else 0.5)  # whose init
    assert all(not l.use_bias for l in convs)
    assert len([l for l in model.layers if l.name.startswith("bn")]) == len(convs)
    assert model.output_shape == (None, 100)


def test_every_layer_is_named_and_builds_are_reproducible():
    for name in model_names():
        shape = (28, 28, 1) if name == "lenet_300_100" else (32, 32, 3)
        a, b = build_model(name, shape, 10), build_model(name, shape, 10)
        names = [l.name for l in a.layers]
        assert names == [l.name for l in b.layers], name  # no auto-numbered names
        assert len(set(names)) == len(names)


def test_lenet_forward_and_unknown_model():
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    assert model(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)
    with pytest.raises(LtKerasError, match="unknown model 'nope'"):
        build_model("nope", (28, 28, 1), 10)


@pytest.mark.parametrize("name, expected, convs", [("resnet18", 11_689_512, 20), ("resnet50", 25_557_032, 53)])
def test_imagenet_resnets_have_torchvisions_parameters_and_round_trip_through_masks(name, expected, convs):
    """torchvision's counts (trainable: BatchNorm's statistics are not parameters there either); every
    convolution bias-free and masked; mask_model of the plain build and strip_masks give the same network."""
    from lt_keras import mask_model, strip_masks
    from lt_keras.mask import Mask

    model = build_model(name, (224, 224, 3), 1000)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected == parameter_count(model) - sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights if "moving_" in w.name)
    layers = masked_layers(model)
    assert len(layers) == convs + 1 and all(not l.use_bias for l in layers[:-1]) and layers[-1].name == "fc"
    kernels = [l.kernel.numpy() for l in layers[:3]]
    assert all(abs(a.std() - b.std()) > 0 for a, b in zip(kernels, kernels[1:]))  # one fresh draw per layer
    plain = build_model(name, (64, 64, 3), 10, masked=False)
    masked = mask_model(plain)
    mask = Mask({key: (np.random.RandomState(0).rand(*v.shape) < 0.5).astype("float32")
                 for key, v in Mask.from_model(masked).items()})
    mask.apply_to(masked)
    x = np.random.RandomState(1).rand(2, 64, 64, 3).astype("float32")
    stripped = strip_masks(masked)
    assert [l.name for l in stripped.layers] == [l.name for l in plain.layers]
    np.testing.assert_allclose(stripped(x).numpy(), masked(x).numpy(), atol=1e-5)


def test_masked_layer_options_are_given_at_build_time():
    """A search builds its model with its mask0 (no converting clone); a bad option is refused where it is
    checked once, and options without masks are refused."""
    from lt_keras.methods.imp import _with_mask0

    model = build_model("lenet_300_100", (28, 28, 1), 10, mask0="freeze_init")
    layers = masked_layers(model)
    assert all(l.mask0 == "freeze_init" for l in layers)
    np.testing.assert_array_equal(layers[0].kernel_frozen.numpy(), layers[0].kernel.numpy())  # theta_0
    assert _with_mask0(model, "freeze_init") is model
    assert all(l.mask0 == "zero" for l in masked_layers(_with_mask0(model, "zero")))
    with pytest.raises(LtKerasError, match="mask0: 'thaw' is not one of"):
        build_model("lenet_300_100", (28, 28, 1), 10, mask0="thaw")
    with pytest.raises(LtKerasError, match="need masked=True"):
        build_model("lenet_300_100", (28, 28, 1), 10, masked=False, mask0="freeze_init")
