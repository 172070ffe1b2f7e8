"""The Mask type: validation, statistics, persistence, model I/O."""
import json

import numpy as np
import pytest

from lt_keras import Mask, MaskError, mask_model, masked_layers
from lt_keras.models import build_model


def two_layer_mask():
    return Mask({"a/kernel": np.array([[1, 0], [1, 1]]), "b/kernel": np.array([0, 0, 0, 1])})


def test_counts_and_densities():
    m = two_layer_mask()
    assert m.counts() == {"a/kernel": (3, 4), "b/kernel": (1, 4)}
    assert m.layer_densities() == {"a/kernel": 0.75, "b/kernel": 0.25}
    assert m.density() == 0.5
    assert m["a/kernel"].dtype == np.float32


def test_hamming_distance():
    a = two_layer_mask()
    b = Mask({"a/kernel": np.array([[0, 0], [1, 1]]), "b/kernel": np.array([0, 1, 1, 1])})
    assert a.hamming_distance(b, normalized=False) == 3
    assert a.hamming_distance(b) == 3 / 8
    assert a.hamming_distance(a) == 0.0
    with pytest.raises(MaskError, match="different keys"):
        a.hamming_distance(Mask({"a/kernel": np.ones((2, 2))}))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"a/kernel": np.array([0, 0.5])}, "not binary"),
        ({"a/kernel": np.array([2, 1])}, "not binary"),
        ({"a/kernel": np.array(["x"])}, "non-numeric"),
    ],
)
def test_rejects_non_binary(arrays, message):
    with pytest.raises(MaskError, match=message):
        Mask(arrays)


def test_bool_arrays_accepted_and_arrays_are_read_only():
    m = Mask({"a/kernel": np.array([True, False])})
    np.testing.assert_array_equal(m["a/kernel"], [1.0, 0.0])
    with pytest.raises(ValueError):
        m["a/kernel"][0] = 0


def test_save_load_round_trip_and_report(tmp_path):
    m = two_layer_mask()
    path = m.save(tmp_path / "mask")
    assert path.endswith("mask.npz")
    assert Mask.load(path) == m
    report = json.loads((tmp_path / "mask.json").read_text())
    assert report["density"] == 0.5 and report["layers"]["b/kernel"]["kept"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_load_errors(tmp_path):
    with pytest.raises(MaskError, match="does not exist"):
        Mask.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(MaskError, match="not a readable"):
        Mask.load(bad)


def test_from_model_apply_to_and_fit_errors():
    model = build_model("lenet_300_100", (28, 28, 1), 10)
    ones = Mask.from_model(model)
    assert sorted(ones) == ["fc1/kernel", "fc2/kernel", "output/kernel"]
    assert ones.density() == 1.0 and ones == Mask.ones_like(model)
    rng = np.random.RandomState(0)
    half = Mask({k: rng.rand(*v.shape) < 0.5 for k, v in ones.items()})
    half.apply_to(model)
    assert Mask.from_model(model) == half
    with pytest.raises(MaskError, match=r"missing keys \['output/kernel'\]"):
        Mask({k: v for k, v in half.items() if k != "output/kernel"}).apply_to(model)
    with pytest.raises(MaskError, match="unknown keys"):
        Mask({**half, "nope/kernel": np.ones(3)}).apply_to(model)
    with pytest.raises(MaskError, match="has shape"):
        Mask({**half, "fc2/kernel": np.ones((3, 3))}).apply_to(model)
    assert Mask.from_model(model) == half  # failed applications changed nothing


def test_from_model_requires_masked_layers():
    plain = build_model("lenet_300_100", (28, 28, 1), 10, masked=False)
    with pytest.raises(MaskError, match="no masked layers"):
        Mask.from_model(plain)
    assert len(masked_layers(mask_model(plain))) == 3
