"""Shared fixtures: small models, and the optional real data beside the repo."""
import os

import numpy as np
import pytest

from lt_keras._keras import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


def random_mask(shape, density, seed):
    rng = np.random.RandomState(seed)
    return (rng.rand(*shape) < density).astype(np.float32)


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real datasets not present at {SHARED_DATA} (only on the project's own machines)")
    return SHARED_DATA
