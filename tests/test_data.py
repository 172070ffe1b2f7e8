"""Data loaders: generated official-format files, the embedded set, TFDS (mocked), real files."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from lt_keras.data import DataConfig, DataError, load_dataset
from lt_keras.errors import ConfigError


def write_idx(path, array, gz):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist_dir(folder, n_train=120, n_test=30, gz=True):
    rng = np.random.RandomState(0)
    train_x = rng.randint(0, 256, (n_train, 28, 28))
    train_y = np.arange(n_train) % 10
    write_idx(folder / "train-images-idx3-ubyte", train_x, gz)
    write_idx(folder / "train-labels-idx1-ubyte", train_y, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.randint(0, 256, (n_test, 28, 28)), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz)
    return train_x, train_y


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_splits_last_examples_for_validation(tmp_path, gz):
    train_x, train_y = make_mnist_dir(tmp_path, gz=gz)
    data = load_dataset("mnist", data_dir=str(tmp_path), validation_size=20)
    assert data.sizes() == {"train": 100, "validation": 20, "test": 30}
    np.testing.assert_array_equal(data.y_val, train_y[-20:])
    assert data.x_train.shape == (100, 28, 28, 1) and data.x_train.dtype == np.float32
    expected = (train_x[-20:].astype(np.float32) - 0.1307 * 255) / (0.3081 * 255)
    np.testing.assert_allclose(data.x_val[..., 0], expected, atol=1e-5)
    limited = load_dataset("mnist", data_dir=str(tmp_path), validation_size=20, max_train_examples=7)
    assert limited.sizes()["train"] == 7
    np.testing.assert_array_equal(limited.y_train, train_y[:7])


def test_idx_errors_name_the_path_and_files(tmp_path):
    with pytest.raises(DataError, match=r"lacks the MNIST-style IDX files .*train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=str(tmp_path))
    make_mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is not an IDX file"):
        load_dataset("mnist", data_dir=str(tmp_path), validation_size=20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, 99) + b"\x01\x02")
    with pytest.raises(DataError, match="holds 2 values but its header says"):
        load_dataset("mnist", data_dir=str(tmp_path), validation_size=20)


def test_validation_size_must_leave_training_data(tmp_path):
    make_mnist_dir(tmp_path)
    with pytest.raises(DataError, match="validation size 120"):
        load_dataset("mnist", data_dir=str(tmp_path), validation_size=120)


def write_cifar_batch(path, n, label_key=b"labels", seed=0):
    rng = np.random.RandomState(seed)
    batch = {b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), label_key: list(rng.randint(0, 10, n))}
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_cifar10_dir_with_any_number_of_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    b1 = write_cifar_batch(root / "data_batch_1", 30, seed=1)
    b2 = write_cifar_batch(root / "data_batch_2", 20, seed=2)
    write_cifar_batch(root / "test_batch", 10, seed=3)
    data = load_dataset("cifar10", data_dir=str(tmp_path), validation_size=5)  # parent folder is accepted
    assert data.sizes() == {"train": 45, "validation": 5, "test": 10}
    np.testing.assert_array_equal(data.y_val, b2[b"labels"][-5:])
    # Channel-major R,G,B planes become NHWC: pixel (0,0) of image 0 holds data[0], data[1024], data[2048].
    raw = b1[b"data"][0]
    mean, std = np.array([0.4914, 0.4822, 0.4465]) * 255, np.array([0.2470, 0.2435, 0.2616]) * 255
    np.testing.assert_allclose(data.x_train[0, 0, 0], (raw[[0, 1024, 2048]] - mean) / std, atol=1e-5)
    # You et al.'s code: transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)) of ToTensor's x/255.
    theirs = load_dataset("cifar10", data_dir=str(tmp_path), validation_size=5, normalization="earlybird_code")
    expected = (raw[[0, 1024, 2048]] / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2023, 0.1994, 0.2010])
    np.testing.assert_allclose(theirs.x_train[0, 0, 0], expected, atol=1e-5)
    np.testing.assert_allclose(theirs.black_pixel(), -np.array([0.4914, 0.4822, 0.4465]) / [0.2023, 0.1994, 0.2010],
                               rtol=1e-6)
    with pytest.raises(ConfigError, match="normalization"):
        load_dataset("mnist_5k", normalization="earlybird_code")


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match="not a CIFAR python directory"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    write_cifar_batch(tmp_path / "test_batch", 4)
    with pytest.raises(DataError, match="no data_batch_"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    (tmp_path / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataError, match="data_batch_1 is not a CIFAR python batch"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar100_dir(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    write_cifar_batch(root / "train", 12, label_key=b"fine_labels")
    write_cifar_batch(root / "test", 6, label_key=b"fine_labels")
    data = load_dataset("cifar100", data_dir=str(tmp_path), validation_size=2)
    assert data.sizes() == {"train": 10, "validation": 2, "test": 6} and data.num_classes == 100


def test_embedded_default_is_real_balanced_mnist():
    data = DataConfig().load()
    assert data.spec.name == "mnist_5k" and data.source.startswith("embedded")
    assert data.sizes() == {"train": 3500, "validation": 500, "test": 1000}
    assert np.bincount(data.y_test).min() >= 80  # every class present in each split
    assert np.bincount(data.y_val).min() >= 30
    with pytest.raises(ConfigError, match="data_dir: dataset 'mnist_5k' is embedded and takes none"):
        load_dataset("mnist_5k", data_dir="/tmp")


def test_tfds_source_with_mocked_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        data = load_dataset("cifar10", tfds_data_dir=str(tmp_path), validation_size=10)
    assert data.sizes() == {"train": 30, "validation": 10, "test": 40}
    assert data.x_train.shape[1:] == (32, 32, 3) and data.source == f"tfds:{tmp_path}"


def test_pipelines():
    data = DataConfig(max_train_examples=120).load()
    batches = list(data.train_dataset(60, seed=3).take(4).as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(60, 28, 28, 1)] * 4
    again = list(data.train_dataset(60, seed=3).take(4).as_numpy_iterator())
    np.testing.assert_array_equal(batches[0][1], again[0][1])  # seeded
    assert sum(len(y) for _, y in data.eval_dataset("test", 300)) == 1000
    with pytest.raises(DataError, match="batch size 500 exceeds"):
        data.train_dataset(500)


def test_real_files(shared_data):
    mnist = load_dataset("mnist", data_dir=os.path.join(shared_data, "mnist"))
    assert mnist.sizes() == {"train": 55000, "validation": 5000, "test": 10000}
    assert np.bincount(mnist.y_test).tolist()[:3] == [980, 1135, 1032]
    cifar = load_dataset("cifar10", data_dir=os.path.join(shared_data, "cifar10"), validation_size=1000)
    assert cifar.sizes() == {"train": 9000, "validation": 1000, "test": 10000}
    assert abs(float(cifar.x_test.mean())) < 0.1


def _crops_and_flips(image, black):
    """Every image crop_flip can make of ``image``: (offset, flipped) -> result."""
    padded = np.pad(image - black, [(4, 4), (4, 4), (0, 0)]) + black
    h, w = image.shape[:2]
    out = {}
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy:dy + h, dx:dx + w]
            out[(dy, dx, False)], out[(dy, dx, True)] = crop, crop[:, ::-1]
    return out


def test_crop_flip_is_a_seeded_pad4_crop_and_flip_per_example_and_resumes_exactly():
    from lt_keras.data import DataConfig

    data = DataConfig(max_train_examples=300).load()
    plain = next(iter(data.train_dataset(60, seed=3)))[0].numpy()
    augmented = [b[0] for b in data.train_dataset(60, seed=3, augment="crop_flip").take(5).as_numpy_iterator()]
    again = [b[0] for b in data.train_dataset(60, seed=3, augment="crop_flip").take(5).as_numpy_iterator()]
    for a, b in zip(augmented, again):
        np.testing.assert_array_equal(a, b)  # reproducible under the seed
    black = np.asarray(data.black_pixel(), np.float32)
    assert np.allclose(black * np.asarray(data.spec.std) + np.asarray(data.spec.mean), 0, atol=1e-6)  # raw 0: black
    seen = set()
    for original, result in zip(plain, augmented[0]):  # the same shuffled order as without augmentation
        matches = [k for k, v in _crops_and_flips(original, black).items() if np.allclose(v, result, atol=1e-6)]
        assert matches, "not a pad-4 crop (and flip) of its example"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True} and len({(dy, dx) for dy, dx, _ in seen}) > 10
    assert any(dy in (0, 8) or dx in (0, 8) for dy, dx, _ in seen)  # some crops show the black border
    assert not np.array_equal(augmented[0], plain)
    skipped = [b[0] for b in data.train_dataset(60, seed=3, augment="crop_flip").skip(3).take(2).as_numpy_iterator()]
    for a, b in zip(skipped, augmented[3:]):
        np.testing.assert_array_equal(a, b)  # a resumed fit skips batches and sees the same augmented ones
    other_seed = next(iter(data.train_dataset(60, seed=4, augment="crop_flip")))[0].numpy()
    assert not np.array_equal(other_seed, augmented[0])


def test_offline_without_the_data_fails_at_once_naming_what_to_pass(tmp_path, monkeypatch):
    """TFDS would retry its download for minutes offline; the loader probes the host first and says what to do."""
    import time

    import lt_keras.data as data_module

    probed = []
    monkeypatch.setattr(data_module, "_reachable", lambda host, **kw: probed.append(host) or False)
    start = time.time()
    with pytest.raises(DataError, match="--data_dir .*--tfds_data_dir .*mnist_5k"):
        load_dataset("mnist", tfds_data_dir=str(tmp_path))
    assert probed == ["storage.googleapis.com"] and time.time() - start < 60
