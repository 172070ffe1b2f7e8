"""The precision a search runs at, as a model transform: the searches call ``to_search`` and ``to_fp32``.

At ``int8`` the search trains TFMOT's fake-quantized twin of the masked model
(weights, activations and gradients in 8 bits; ``lt_keras.quantize``, which
imports TFMOT, is loaded only then); at ``fp32`` both transforms return the
model itself. Tickets are always written and retrained at fp32; ticket.json
records the precision they were found at (``found_at_precision``).
"""
import dataclasses

import numpy as np

from lt_keras.errors import ConfigError
from lt_keras.options import option

PRECISIONS = ("fp32", "int8")


def check_bits(name, bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ConfigError(name, f"bit width must be an integer in [2, 16], got {bits!r}.")
    return int(bits)


@dataclasses.dataclass(frozen=True)
class SearchPrecision:
    """The precision a search runs at: ``to_search`` before training, ``to_fp32`` before a ticket is written."""

    precision: str = option("fp32", "Search precision: int8 fake-quantizes weights, activations and gradients "
                            "(TFMOT); tickets are written and retrained at fp32.", choices=PRECISIONS)
    weight_bits: int = option(8, "int8 search: weight bits of masked layers.")
    activation_bits: int = option(8, "int8 search: activation bits of masked layers.")
    gradient_bits: int = option(8, "int8 search: bits of backward errors and weight gradients.")

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"{self.precision!r} is not one of {list(PRECISIONS)}.")
        for name in ("weight_bits", "activation_bits", "gradient_bits"):
            check_bits(name, getattr(self, name))

    def to_search(self, model):
        """The model the search trains: ``model`` itself at fp32, its fake-quantized twin at int8."""
        if self.precision == "fp32":
            return model
        from lt_keras.quantize import to_search_precision  # TFMOT loads only for an 8-bit search

        return to_search_precision(model, self)

    def to_fp32(self, model):
        """The fp32 masked model with ``model``'s weights and masks (``model`` itself at fp32)."""
        if self.precision == "fp32":
            return model
        from lt_keras.quantize import from_search_precision  # TFMOT loads only for an 8-bit search

        return from_search_precision(model)

    @property
    def bits(self):
        """The bit widths, for records: empty at fp32."""
        if self.precision == "fp32":
            return {}
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "gradient_bits": self.gradient_bits}

    def describe(self):
        return {"precision": self.precision, **self.bits}
