"""The one place that imports Keras.

TFMOT works only with Keras 2 (``tf_keras``); TensorFlow >= 2.16 ships Keras 3
as ``tf.keras`` unless ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is
imported. Every other module takes ``keras`` from here, so the whole library
(and TFMOT inside the same process) sees a single Keras 2.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":  # pragma: no cover
    raise ImportError(
        "lt_keras needs Keras 2 (tf_keras) for TFMOT, but TF_USE_LEGACY_KERAS is "
        f"set to {os.environ['TF_USE_LEGACY_KERAS']!r}; unset it or set it to 1."
    )

__all__ = ["keras", "tf"]
