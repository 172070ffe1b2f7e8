"""lt_keras: lottery tickets, supermasks and Early-Bird tickets for Keras."""
__version__ = "0.1.0"

from lt_keras.convert import mask_model, strip_masks  # noqa: E402
from lt_keras.errors import ConfigError, LtKerasError, MaskError  # noqa: E402
from lt_keras.imp import ImpConfig, TicketSearch, find_ticket  # noqa: E402
from lt_keras.layers import MaskedConv2D, MaskedDense, masked_layers  # noqa: E402
from lt_keras.mask import Mask  # noqa: E402
from lt_keras import supermask  # noqa: E402

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
