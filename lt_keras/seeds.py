"""Random streams derived from (seed, round, purpose) alone.

Every random draw of a search (initial weights, data order, mask-1 and
mask-0 draws, criteria, controls) takes its seed from here, never from
global state that another stage may have moved: a resumed run draws exactly
what an uninterrupted one drew.
"""
import hashlib

import numpy as np

from lt_keras._keras import keras


def derive_seed(seed, round_index, purpose) -> int:
    """A 31-bit seed for one stream; different purposes or rounds give unrelated streams."""
    digest = hashlib.sha256(f"{int(seed)}/{int(round_index)}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rng_for(seed, round_index, purpose) -> np.random.RandomState:
    return np.random.RandomState(derive_seed(seed, round_index, purpose))


def seed_globals(seed, round_index, purpose):
    """Seed Python, NumPy and TensorFlow's global generators for one stage (what Keras draws from)."""
    keras.utils.set_random_seed(derive_seed(seed, round_index, purpose))
