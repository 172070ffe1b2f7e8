"""Whole-model conversion between plain Keras layers and masked layers.

``mask_model`` lets a user bring their own Sequential or functional model
(nested models included): its weight layers (Dense, convolutions, Embedding,
EinsumDense, attention, recurrent layers) become their masked twins with the same weights and
all-ones masks. ``strip_masks`` goes back, baking
``kernel * mask`` into plain layers, so exported models need nothing of ours.
``flatten_model`` inlines nested blocks for the tools that read one flat
graph (TFMOT's 8-bit twin, Early-Bird's channel analysis and slimming).
"""
import numpy as np
from absl import logging

from lt_keras._keras import keras
from lt_keras.actions import check_mask0
from lt_keras.errors import LtKerasError
from lt_keras.graph import inline, input_name
from lt_keras.keras3 import from_keras3, keras_line, not_keras2_message
from lt_keras.layers import MASK_OPTIONS, MASKED_TWIN, PLAIN_TWIN, is_masked, parts, walk_layers


def _check_convertible(model):
    if not isinstance(model, keras.Model):
        raise TypeError(not_keras2_message(model))
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise LtKerasError(
            f"model {model.name!r} is a subclassed model; mask_model and strip_masks convert "
            "Sequential and functional models. Build the subclassed model from "
            "lt_keras.MaskedDense, MaskedConv2D and the other masked layers (lt_keras.layers) directly instead."
        )
    if not model.built:
        raise LtKerasError(f"model {model.name!r} is not built; call it or give it an input shape first.")


def _convert(model, twin_of, weights_of, config_of=lambda layer, config: config):
    """Clone ``model`` with layers swapped by ``twin_of``, configs by ``config_of``, weights by ``weights_of``."""
    _check_convertible(model)
    pairs = []

    def clone(layer):
        if isinstance(layer, keras.Model):
            new = _convert(layer, twin_of, weights_of, config_of)
        else:
            cls = twin_of.get(type(layer), type(layer))
            new = cls.from_config(config_of(layer, layer.get_config()))
            pairs.append((layer, new))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone)
    for old, new in pairs:
        for old_part, new_part in zip(parts(old), parts(new)):  # an attention layer: projection by projection
            new_part.set_weights(weights_of(old_part, new_part))
    return new_model


def _variable_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def mask_model(model, **options):
    """A copy of ``model`` whose weight layers are masked twins (``lt_keras.layers.MASKED_TWIN``: Dense,
    convolutions, Embedding, EinsumDense, attention, recurrent layers; exact types).

    Plain layers get all-ones masks; masked layers keep their masks (and
    scores, when the mode stays). ``options`` set masked-layer options on
    every masked layer: ``mask0`` ("zero", or one of the "freeze_init" family of
    ``lt_keras.actions``: pruned weights keep the kernel's values at
    conversion time), and the supermask options
    ``mask_mode``, ``keep_fraction``, ``score_init``, ``eval_mask``,
    ``dynamic_weight_rescaling`` (see ``lt_keras.layers``). A Keras 3 model
    is converted first (``lt_keras.from_keras3``).
    """
    if keras_line(model) == "keras3":
        logging.info("mask_model: %r is a Keras 3 model; converting it with lt_keras.from_keras3.", model.name)
        model = from_keras3(model)
    unknown = sorted(set(options) - set(MASK_OPTIONS))
    if unknown:
        raise LtKerasError(f"mask_model: unknown options {unknown}; choose from {list(MASK_OPTIONS)}.")
    check_mask0(options.get("mask0", "zero"))
    if "mask_mode" in options and "eval_mask" not in options:
        options["eval_mask"] = None  # the new mode's default

    def config(layer, config):
        if type(layer) in MASKED_TWIN or type(layer) in PLAIN_TWIN or is_masked(layer):
            config = dict(config, **options)
        return config

    def weights(old, new):
        if not is_masked(new):
            return old.get_weights()
        old_masked = is_masked(old)
        values = []
        for variable in new.weights:
            name = _variable_name(variable)
            if name in (new.KERNEL, "bias"):
                values.append(getattr(old, name).numpy())
            elif name == "kernel_mask":
                values.append(old.kernel_mask.numpy() if old_masked else np.ones(variable.shape, np.float32))
            elif name == "kernel_frozen":
                kept = old_masked and old.kernel_frozen is not None
                values.append((old.kernel_frozen if kept else getattr(old, new.KERNEL)).numpy())
            elif name == "kernel_scores":
                same = old_masked and old.kernel_scores is not None and old.mask_mode == new.mask_mode
                values.append((old.kernel_scores if same else variable).numpy())
            elif name == "sample_count":
                same = old_masked and getattr(old, "sample_count", None) is not None
                values.append((old.sample_count if same else variable).numpy())
            else:
                raise LtKerasError(f"mask_model: no source for variable {variable.name!r}.")
        return values

    masked = _convert(model, MASKED_TWIN, weights, config)
    _report_masking(masked)
    return masked


def coverage(model) -> float:
    """The fraction of ``model``'s kernel weights (trainable weights other than biases and normalization scales
    and offsets) that masked layers hold."""
    masked = sum(layer.kernel.shape.num_elements() for layer in walk_layers(model) if is_masked(layer))
    plain = sum(w.shape.num_elements() for layer in walk_layers(model) if not is_masked(layer)
                for w in layer.trainable_weights if not any(p in w.name for p in ("bias", "gamma", "beta")))
    return masked / max(masked + plain, 1)


def _report_masking(model):
    """Log a table of the weight layers, masked or dense; a model with nothing to mask is an error, not a no-op."""
    rows = [(layer.name, type(layer).__name__, "masked" if is_masked(layer) else "dense",
             sum(int(np.prod(w.shape)) for w in layer.trainable_weights if len(w.shape) >= 2))
            for layer in walk_layers(model)
            if is_masked(layer) or any(len(w.shape) >= 2 for w in layer.trainable_weights)]
    dense = [f"{name} ({kind})" for name, kind, status, _ in rows if status == "dense"]
    if len(dense) == len(rows):
        raise LtKerasError(
            f"mask_model: model {model.name!r} has no layer lt_keras can mask (keras.layers.Dense, Conv1D/2D/3D, "
            f"Depthwise/SeparableConv2D, Conv2DTranspose, Embedding, EinsumDense, MultiHeadAttention, SimpleRNN, GRU "
            f"and LSTM, exact types); its weight layers {dense or '(none)'} would stay dense.")
    width = max(len(name) for name, *_ in rows)
    table = "\n".join(f"  {name:<{width}}  {kind:<16} {status:<6} {count:>10,}" for name, kind, status, count in rows)
    logging.info("mask_model: %d of %d weight layers masked:\n%s", len(rows) - len(dense), len(rows), table)
    if dense:
        logging.warning("mask_model: %d layers have no masked twin and stay dense: %s", len(dense), ", ".join(dense))


def strip_masks(model):
    """A copy of ``model`` with plain layers whose kernels are ``kernel * mask``."""

    def weights(old, new):
        if is_masked(old):
            kernel = old.deterministic_kernel().numpy()
            return [kernel] + ([old.bias.numpy()] if old.use_bias else [])
        return old.get_weights()

    def config(layer, config):
        if type(layer) in PLAIN_TWIN:
            config = {k: v for k, v in config.items() if k not in MASK_OPTIONS}
        return config

    return _convert(model, PLAIN_TWIN, weights, config)


def is_nested(model) -> bool:
    """Whether ``model`` holds another model as a layer."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten_model(model):
    """A functional copy of ``model`` with every nested Sequential / functional block inlined.

    Same layers (cloned, weights copied, shared layers still shared), same
    outputs, one flat graph; ``model`` itself when nothing is nested. TFMOT's
    ``quantize_apply`` and the Early-Bird graph walk both need one flat graph.
    """
    if not is_nested(model):
        return model
    _check_convertible(model)
    inputs = [keras.Input(shape=x.shape[1:], dtype=x.dtype, name=input_name(x)) for x in model.inputs]
    outputs, pairs = inline(model, inputs, lambda layer: type(layer).from_config(layer.get_config()))
    try:
        flat = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    except ValueError as e:
        raise LtKerasError(f"flatten_model: cannot inline the blocks of {model.name!r}: {e} Give every layer, "
                           "nested ones included, a unique name.") from None
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return flat
