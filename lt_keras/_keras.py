"""The one place that imports Keras.

TFMOT works only with Keras 2 (``tf_keras``), so lt_keras builds on
``tf_keras`` directly and every other module takes ``keras`` from here (users
take it as ``lt_keras.keras``). Importing lt_keras leaves ``tf.keras`` as it
was: Keras 3 on TensorFlow >= 2.16 unless ``TF_USE_LEGACY_KERAS=1``. Only the
8-bit search imports TFMOT, which resolves ``tf.keras`` to Keras 2 while it
imports (``lt_keras.quantize`` puts the variable back and warns). Keras 3
models come in through ``lt_keras.from_keras3`` and go back through
``to_keras3``, which takes Keras 3 from ``keras3()``.
"""
import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_start_for_binaries():
    """While a binary (``lt-imp``, ``python -m lt_keras.bin.imp``, ...) imports TensorFlow, send file descriptor 2
    to /dev/null: TensorFlow's C++ logs its start-up lines ("oneDNN custom operations are on", CUDA probes)
    there before any logging setting applies, and a binary's ``--help`` or one-line error should be all a user
    sees. A Python exception raised by the import is printed after stderr is back; library users see it all."""
    binary = sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "").startswith("lt-")
    if not binary or os.environ.get("LT_KERAS_VERBOSE_START"):
        yield
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_start_for_binaries():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402



def keras3():
    """The Keras 3 package (the users' ``import keras``), imported on first use: only the bridge needs it."""
    import keras as keras_3

    return keras_3


__all__ = ["keras", "keras3", "tf"]
