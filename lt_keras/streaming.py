"""Datasets too large for memory (ImageNet), streamed from TFDS's files as ``tf.data`` pipelines.

The loader never reads an example: ``load`` opens the TFDS builder, reads the
split sizes from its metadata and returns ``StreamingData``, whose pipelines
read the record files as a step asks for them (file-level shuffling, a shuffle
buffer, decode and augment in ``map``, batch, prefetch). Under a multi-worker
strategy Keras shards them by file. Evaluation streams too (no cache).

Transforms are the standard ResNet ones: training takes a random-resized crop
(8%-100% of the area, aspect 3/4-4/3) to the input size and flips at random;
evaluation resizes the shorter side to input * 256/224 and takes the center
crop. The crop and flip draws are keyed by (seed, the example's position in the
stream), and TFDS reads the files in an order fixed by the seed, so the stream
is a function of the seed: a resumed fit, which skips the batches already seen,
trains on exactly the batches an uninterrupted one would (it reads and drops
the skipped examples: exact, at the cost of re-reading them).

The in-memory path (``lt_keras.data``) stays for MNIST and CIFAR.
"""
import dataclasses

import numpy as np

from lt_keras._keras import tf
from lt_keras.errors import DataError

SHUFFLE_BUFFER = 10_000  # examples; with TFDS's file shuffling, the usual ImageNet input pipelines' order


@dataclasses.dataclass
class StreamingData:
    """One dataset's splits as TFDS file streams; the same pipelines as ``lt_keras.data.Data``."""

    spec: object  # lt_keras.data.DatasetSpec
    source: str
    builder: object  # tfds.core.DatasetBuilder, prepared
    train_split: str
    validation_split: str
    test_split: str
    num_train: int
    num_validation: int
    num_test: int

    @property
    def input_shape(self):
        return self.spec.input_shape

    @property
    def num_classes(self):
        return self.spec.num_classes

    def sizes(self):
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}

    def check_batch_size(self, batch_size):
        if batch_size > self.num_train:
            raise DataError(f"batch size {batch_size} exceeds the {self.num_train} training examples of "
                            f"{self.spec.name}.")

    def _read(self, split, shuffle_seed=None):
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)  # never cached in memory
        ds = self.builder.as_dataset(split=split, as_supervised=True, shuffle_files=shuffle_seed is not None,
                                     read_config=read_config)
        options = tf.data.Options()
        options.deterministic = True  # the order is a function of the seed (resume replays it exactly)
        return ds.with_options(options)

    def train_dataset(self, batch_size, seed=0, repeat=True, augment="crop_flip"):
        """Shuffled batches of the training split. ``augment="crop_flip"`` (``--augment``) is, for these
        datasets, the random-resized crop and flip; ``none`` takes the evaluation transform."""
        self.check_batch_size(batch_size)
        ds = self._read(self.train_split, shuffle_seed=seed)
        ds = ds.shuffle(min(SHUFFLE_BUFFER, self.num_train), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        size, (mean, std) = self.input_shape[0], _mean_std(self.spec)

        def transform(index, example):
            image, label = example
            image = (train_crop(image, size, seed, index) if augment != "none" else eval_crop(image, size))
            return (image - mean) / std, tf.cast(label, tf.int32)

        ds = ds.enumerate().map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self, split, batch_size=250):
        """Unshuffled batches of ``split`` ("validation" or "test") with the evaluation transform."""
        name = {"validation": self.validation_split, "test": self.test_split}[split]
        size, (mean, std) = self.input_shape[0], _mean_std(self.spec)
        ds = self._read(name).map(lambda image, label: ((eval_crop(image, size) - mean) / std,
                                                         tf.cast(label, tf.int32)),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _mean_std(spec):
    return (tf.constant(np.asarray(spec.mean, np.float32) * 255.0), tf.constant(np.asarray(spec.std, np.float32)
                                                                                 * 255.0))


def train_crop(image, size, seed, index):
    """Random-resized crop to ``size`` x ``size`` (8%-100% of the area, aspect 3/4-4/3) and a random horizontal
    flip, keyed by (``seed``, ``index``); float32 pixels in [0, 255]."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
    box = tf.zeros([1, 0, 4], tf.float32)  # no bounding boxes: the whole image
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), box, seed=crop_key, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, extent)
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear", antialias=False)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_key)


def eval_crop(image, size):
    """Resize the shorter side to ``size`` * 256 / 224, then the central ``size`` x ``size`` crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.round(size * 256.0 / 224.0) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), resized, method="bilinear", antialias=True)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    return tf.reshape(tf.slice(image, [top, left, 0], [size, size, -1]), [size, size, 3])


def load(spec, tfds_data_dir=None, validation_size=None, max_train_examples=None) -> StreamingData:
    """``spec`` (a streaming ``DatasetSpec``) from a prepared TFDS copy in ``tfds_data_dir``; reads metadata only.

    Validation examples come from the end of TFDS's training split (early stopping needs them; the test split is
    TFDS's ``validation`` or ``test``).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(spec.tfds_name, data_dir=tfds_data_dir)
        splits = builder.info.splits
        total = splits["train"].num_examples
    except Exception as e:  # TFDS raises many types for a missing or unreadable copy
        total = 0
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        error = ""
    if not total:
        raise DataError(f"{spec.name!r} is not prepared in the TFDS data dir ({tfds_data_dir or 'TFDS default'}) "
                        f"{error}. It is too large to download here: prepare it with TFDS (for ImageNet, put the "
                        "official archives in <tfds_data_dir>/downloads/manual and run `tfds build "
                        f"{spec.tfds_name} --data_dir=<tfds_data_dir>`), then pass --tfds_data_dir.")
    test_split = "test" if "test" in splits else "validation"
    validation_size = spec.default_validation_size if validation_size is None else validation_size
    if not 0 < validation_size < total:
        raise DataError(f"validation size {validation_size} must be between 1 and {total - 1} for {spec.name} "
                        f"({total} training examples).")
    num_train = total - validation_size
    if max_train_examples is not None:
        num_train = min(num_train, max_train_examples)
    return StreamingData(spec, f"tfds-stream:{builder.data_dir}", builder, f"train[:{num_train}]",
                         f"train[{total - validation_size}:]", test_split, num_train, validation_size,
                         splits[test_split].num_examples)
