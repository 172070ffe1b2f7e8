"""Device strategies for every method: TensorFlow's own ``tf.distribute``, chosen by name, in one place.

``default`` is TensorFlow's default strategy (one device; a GPU when one is
visible, else the CPU). ``mirrored`` replicates over the local GPUs (or over
logical CPU devices made by ``split_cpu``). ``multi_worker`` is
``MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` environment
variable; every worker runs the same command. ``Devices`` is the part of a
run's spec that picks one (``--strategy``, ``--cpu_devices``); the methods'
base enters its scope around the whole method, so the model, its masks and
mask scores, the optimizer and the search's callbacks live on every replica.

The batch size is the global batch: each step splits one batch of the
single-device order across the replicas and sums their gradients, so a
search sees the data of a one-device run. BatchNorm layers of the registered
models synchronize their batch statistics across replicas (``models``), so
a step's statistics are the global batch's, as on one device.
"""
import dataclasses
import json
import os

from lt_keras._keras import tf
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.options import option

STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class Devices:
    """Where a method runs (``--batch_size`` is the global batch, split across the replicas)."""

    strategy: str = option("default", "tf.distribute strategy: default (one device), mirrored (the local GPUs, or "
                           "--cpu_devices logical CPUs), multi_worker (TF_CONFIG; every worker runs the same "
                           "command). --batch_size is the global batch, split across the replicas.",
                           choices=STRATEGIES)
    cpu_devices: int = option(1, "Split the CPU into N logical devices (mirrored runs without GPUs; tests).",
                              lower_bound=1)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"{self.strategy!r} is not one of {list(STRATEGIES)}.")
        if self.cpu_devices < 1:
            raise ConfigError("cpu_devices", f"must be >= 1, got {self.cpu_devices}.")

    @property
    def is_default(self) -> bool:
        return self == Devices()

    def make(self):
        """The ``tf.distribute`` strategy (call before anything else initializes TensorFlow's devices)."""
        split_cpu(self.cpu_devices)
        return make_strategy(self.strategy)


def split_cpu(count):
    """Split the physical CPU into ``count`` logical devices (before TensorFlow initializes them)."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or ()) == count:
        return  # already split this way (a second method in the same process)
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:
        raise ConfigError("cpu_devices", f"TensorFlow's devices are already initialized ({e}); split the CPU "
                          "before anything else runs TensorFlow.") from None


_MADE = {}


def make_strategy(name):
    """The strategy ``name``, made once per process: a second strategy over the same devices would reuse its
    collective-op keys, and TensorFlow allows one multi-worker strategy per process."""
    if name not in STRATEGIES:
        raise ConfigError("strategy", f"{name!r} is not one of {list(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in _MADE:
        _MADE[name] = _new_strategy(name)
    return _MADE[name]


def _new_strategy(name):
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if "TF_CONFIG" not in os.environ:
        raise ConfigError("strategy", "multi_worker needs the TF_CONFIG environment variable (see README).")
    return tf.distribute.MultiWorkerMirroredStrategy()


def replicas_on_cpus(strategy) -> bool:
    """More than one replica and no GPU: logical CPU devices (or CPU workers), which cannot share an XLA program."""
    return strategy.num_replicas_in_sync > 1 and not tf.config.list_logical_devices("GPU")


def several_replicas() -> bool:
    """Whether the strategy in scope has more than one replica (registered models then synchronize BatchNorm)."""
    return tf.distribute.get_strategy().num_replicas_in_sync > 1


def is_chief():
    """True unless TF_CONFIG names this process as a non-chief worker."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    except ValueError:
        raise LtKerasError("TF_CONFIG is not valid JSON.") from None
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster
