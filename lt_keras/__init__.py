"""lt_keras: lottery tickets, supermasks and Early-Bird tickets for Keras."""
__version__ = "0.1.0"

from lt_keras._keras import keras, tf  # noqa: E402  (Keras 2, as lt_keras uses it)
from lt_keras.compact import compact, compaction_summary  # noqa: E402
from lt_keras.convert import flatten_model, mask_model, strip_masks  # noqa: E402
from lt_keras.errors import ConfigError, LtKerasError, MaskError  # noqa: E402
from lt_keras.imp import ImpConfig, TicketSearch, find_ticket  # noqa: E402
from lt_keras.keras3 import from_keras3, to_keras3  # noqa: E402
from lt_keras.layers import (MaskedConv1D, MaskedConv2D, MaskedConv2DTranspose, MaskedConv3D,  # noqa: E402
                             MaskedDense, MaskedDepthwiseConv2D, MaskedEinsumDense, MaskedEmbedding, MaskedGRU,
                             MaskedLSTM, MaskedMultiHeadAttention, MaskedSeparableConv2D, MaskedSimpleRNN,
                             masked_layers)
from lt_keras.mask import Mask  # noqa: E402
from lt_keras import supermask  # noqa: E402

# The public modules (the API reference, docs/api/, documents these); the ones not imported above load on
# first use (``lt_keras.methods.Imp``), so ``import lt_keras`` stays light.
PUBLIC_MODULES = ("actions", "bernoulli", "compact", "convert", "criteria", "data", "distribute", "duration",
                  "early_bird", "errors", "export", "export_report", "flops", "graph", "imp", "io_utils", "keras3",
                  "layers", "mask", "mask_sources", "methods", "models", "options", "patterns", "precision",
                  "pruning", "quantize", "report", "runs", "seeds", "sparse_serving", "straight_through", "streaming",
                  "supermask", "ticket", "topk", "training", "versions")


def __getattr__(name):
    if name in PUBLIC_MODULES:
        import importlib

        return importlib.import_module(f"lt_keras.{name}")
    raise AttributeError(f"module 'lt_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(PUBLIC_MODULES))


__all__ = [
    "ConfigError",
    "ImpConfig",
    "LtKerasError",
    "Mask",
    "MaskError",
    "MaskedConv1D",
    "MaskedConv2D",
    "MaskedConv2DTranspose",
    "MaskedConv3D",
    "MaskedDense",
    "MaskedDepthwiseConv2D",
    "MaskedEinsumDense",
    "MaskedEmbedding",
    "MaskedGRU",
    "MaskedLSTM",
    "MaskedMultiHeadAttention",
    "MaskedSeparableConv2D",
    "MaskedSimpleRNN",
    "TicketSearch",
    "compact",
    "compaction_summary",
    "find_ticket",
    "flatten_model",
    "from_keras3",
    "keras",
    "mask_model",
    "masked_layers",
    "strip_masks",
    "supermask",
    "tf",
    "to_keras3",
]
