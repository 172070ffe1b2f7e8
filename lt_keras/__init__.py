"""lt_keras: lottery tickets, supermasks and Early-Bird tickets for Keras."""
__version__ = "0.1.0"

from lt_keras.convert import mask_model, strip_masks  # noqa: E402
from lt_keras.errors import ConfigError, LtKerasError, MaskError  # noqa: E402
from lt_keras.imp import ImpConfig, TicketSearch, find_ticket  # noqa: E402
from lt_keras.layers import MaskedConv2D, MaskedDense, masked_layers  # noqa: E402
from lt_keras.mask import Mask  # noqa: E402
from lt_keras import supermask  # noqa: E402

# Modules imported on first use (``lt_keras.early_bird.search``), so ``import lt_keras`` stays light.
_LAZY_MODULES = ("actions", "criteria", "data", "early_bird", "export", "flops", "imp", "models", "precision",
                 "pruning", "quantize", "runs", "ticket", "training")


def __getattr__(name):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"lt_keras.{name}")
    raise AttributeError(f"module 'lt_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES))

__all__ = [
    "ConfigError",
    "ImpConfig",
    "LtKerasError",
    "Mask",
    "MaskError",
    "MaskedConv2D",
    "MaskedDense",
    "TicketSearch",
    "find_ticket",
    "mask_model",
    "masked_layers",
    "strip_masks",
]
