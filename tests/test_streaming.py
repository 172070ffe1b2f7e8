"""The streaming input path: a TFDS dataset written here, read as file streams, never held in memory."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lt_keras import data as data_module
from lt_keras import methods, streaming
from lt_keras._keras import tf
from lt_keras.data import DataConfig, DatasetSpec
from lt_keras.errors import DataError
from lt_keras.imp import ImpConfig
from lt_keras.training import TrainConfig

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class LtTinyImages(tfds.core.GeneratorBasedBuilder):
    """Images of varying size whose brightness gives the label: learnable in a few steps."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(160, 0), "validation": self._generate_examples(40, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.RandomState(seed)
        for i in range(count):
            height, width = rng.randint(36, 60, size=2)
            label = i % 4
            yield i, {"image": (rng.rand(height, width, 3) * 50 + label * 60).astype(np.uint8), "label": label}


SPEC = DatasetSpec("lt_tiny_stream", (32, 32, 3), 4, 32, MEAN, STD, "lt_tiny_images", streaming=True)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tfds"))
    LtTinyImages(data_dir=folder).download_and_prepare()
    return folder


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(data_module.DATASETS, SPEC.name, SPEC)


def _graph(dataset):
    """The pipeline's ops, and the bytes of its largest constant (a split held in memory is a constant)."""
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
    largest = max(len(n.attr["value"].tensor.tensor_content) for n in nodes if n.op == "Const")
    return {node.op for node in nodes}, largest


def test_the_loader_reads_metadata_only_and_no_pipeline_holds_a_split(tfds_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a split was read into memory")

    monkeypatch.setattr(tfds, "as_numpy", refuse)
    opened = []
    original = tfds.core.DatasetBuilder.as_dataset
    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", lambda self, *a, **k: opened.append(k) or
                        original(self, *a, **k))
    loaded = streaming.load(SPEC, tfds_dir)
    assert opened == [] and loaded.sizes() == {"train": 128, "validation": 32, "test": 40}
    assert not any(isinstance(v, np.ndarray) for v in vars(loaded).values())
    for pipeline in (loaded.train_dataset(16, seed=1), loaded.eval_dataset("test"), loaded.eval_dataset("validation")):
        ops, largest = _graph(pipeline)
        assert any(op.startswith("TFRecordDataset") for op in ops), ops  # read from the files
        assert not any(op.startswith("Cache") for op in ops) and largest < 4096, (ops, largest)
    in_memory = DataConfig(max_train_examples=100).load()  # the check fails on pipelines over arrays
    assert _graph(in_memory.train_dataset(16))[1] >= 100 * 28 * 28 * 4
    assert any(op.startswith("Cache") for op in _graph(in_memory.eval_dataset("test"))[0])


def test_a_resumed_stream_gives_the_batches_an_uninterrupted_one_does(tfds_dir):
    loaded = streaming.load(SPEC, tfds_dir)

    def batches(seed, skip=0, count=12):
        return [(x.numpy(), y.numpy()) for x, y in loaded.train_dataset(16, seed=seed).skip(skip).take(count)]

    whole = batches(3)  # 12 batches: a reshuffled second epoch included
    assert all(x.shape == (16, 32, 32, 3) and np.isfinite(x).all() for x, _ in whole)
    for (x, y), (x2, y2) in zip(whole[5:], batches(3, skip=5, count=7)):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    other = batches(4, count=1)[0]
    assert not np.array_equal(other[0], whole[0][0])  # the seed sets the order and the crops
    split = loaded.builder.as_dataset(split=loaded.train_split, as_supervised=True)
    labels = sorted(int(y) for _, y in split)
    assert sorted(np.concatenate([y for _, y in whole[:8]]).tolist()) == labels  # 8 batches: each example once


def test_the_resnet_transforms():
    image = tf.reshape(tf.range(48 * 64 * 3, dtype=tf.float32) % 251, (48, 64, 3))
    center = streaming.eval_crop(image, 32)  # shorter side to round(32 * 256 / 224) = 37, then the center 32 x 32
    resized = tf.image.resize(image, (37, 49), antialias=True)
    np.testing.assert_allclose(center.numpy(), resized[2:34, 8:40].numpy(), atol=1e-4)
    crops = [streaming.train_crop(image, 32, seed=1, index=i).numpy() for i in range(4)]
    assert all(c.shape == (32, 32, 3) for c in crops) and not np.array_equal(crops[0], crops[1])
    np.testing.assert_array_equal(crops[0], streaming.train_crop(image, 32, seed=1, index=0).numpy())


def test_a_search_trains_and_evaluates_through_the_stream(tfds_dir, registered, tmp_path):
    spec = methods.RunSpec("conv2", DataConfig(SPEC.name, tfds_data_dir=tfds_dir),
                           TrainConfig(train_steps=12, eval_every=6, batch_size=16, seed=2, learning_rate=3e-3,
                                       jit_compile=False))
    summary = methods.Imp(ImpConfig(rounds=1)).run(str(tmp_path / "imp"), spec)
    assert summary["data_source"].startswith("tfds-stream:") and summary["dataset"] == SPEC.name
    rounds = summary["rounds"]
    assert len(rounds) == 2 and all(0 <= r["final_test_accuracy"] <= 1 for r in rounds)
    assert rounds[0]["final_test_accuracy"] > 0.4  # learned the brightness from the stream (chance: 0.25)


def test_an_unprepared_streaming_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="tfds build imagenet2012"):
        DataConfig("imagenet2012", tfds_data_dir=str(tmp_path)).load()
