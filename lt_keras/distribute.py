"""Device strategies for retraining: TensorFlow's own ``tf.distribute``, chosen by name.

``default`` is TensorFlow's default strategy (one device; a GPU when one is
visible, else the CPU). ``mirrored`` replicates over the local GPUs (or over
logical CPU devices made by ``split_cpu``). ``multi_worker`` is
``MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` environment
variable; every worker runs the same command. Masks are variables created in
the strategy's scope, so every replica holds the same mask.
"""
import json
import os

from lt_keras._keras import tf
from lt_keras.errors import ConfigError, LtKerasError

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(count):
    """Split the physical CPU into ``count`` logical devices (before TensorFlow initializes them)."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:
        raise ConfigError("cpu_devices", f"TensorFlow's devices are already initialized ({e}).") from None


def make_strategy(name):
    if name not in STRATEGIES:
        raise ConfigError("strategy", f"{name!r} is not one of {list(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if "TF_CONFIG" not in os.environ:
        raise ConfigError("strategy", "multi_worker needs the TF_CONFIG environment variable (see README).")
    return tf.distribute.MultiWorkerMirroredStrategy()


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
