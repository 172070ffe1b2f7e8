"""The one place that imports Keras.

TFMOT works only with Keras 2 (``tf_keras``), so lt_keras builds on
``tf_keras`` directly and every other module takes ``keras`` from here (users
take it as ``lt_keras.keras``). Importing lt_keras leaves ``tf.keras`` as it
was: Keras 3 on TensorFlow >= 2.16 unless ``TF_USE_LEGACY_KERAS=1``. Only the
8-bit search imports TFMOT, which sets ``TF_USE_LEGACY_KERAS=1`` itself
(``lt_keras.quantize`` warns once when that changes anything). Keras 3
models come in through ``lt_keras.from_keras3`` and go back through
``to_keras3``, which takes Keras 3 from ``keras3()``.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402



def keras3():
    """The Keras 3 package (the users' ``import keras``), imported on first use: only the bridge needs it."""
    import keras as keras_3

    return keras_3


__all__ = ["keras", "keras3", "tf"]
