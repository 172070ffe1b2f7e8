"""Supermasks: masks learned (or picked) over frozen, untrained weights.

Zhou et al. (2019) learn mask ~ Bernoulli(sigmoid(scores)) with a
straight-through gradient; edge-popup (Ramanujan et al. 2020) keeps the top
fraction of |scores|. Both live in the masked layers (``mask_mode``); this
module converts models, initializes the frozen weights, evaluates the
stochastic masks as the paper reports them, turns a learned supermask into a
ticket, and evaluates criterion masks on untrained weights.
"""
import dataclasses

import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.actions import apply_mask1, mask1_action_names
from lt_keras.convert import mask_model
from lt_keras.criteria import criterion_names, score
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.layers import masked_layers
from lt_keras.mask import Mask, mask_key
from lt_keras.mask_sources import check_options
from lt_keras.options import option
from lt_keras.patterns import PATTERNS
from lt_keras.pruning import prune_layerwise

ESTIMATORS = ("bernoulli", "topk")
WEIGHT_INITS = ("glorot_normal", "kaiming_normal", "signed_constant", "signed_kaiming_constant")


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    """A learned supermask: estimator, frozen weights, and how it is evaluated."""

    estimator: str = option("bernoulli", "Supermask estimator: bernoulli (Zhou et al.) or topk (edge-popup).",
                            choices=ESTIMATORS)
    keep_fraction: float = option(0.5, "topk: fraction of each layer's weights kept.")
    score_init: float = option(0.0, "bernoulli: initial score (0 -> p = 0.5).")
    eval_mask: str = option(None, "Inference mask during training: sampled or expected (bernoulli), topk (topk). "
                            "Default: sampled / topk.")
    eval_samples: int = option(10, "Sampled masks averaged for the final evaluation.", lower_bound=1)
    weight_init: str = option("glorot_normal", "Frozen weights.", choices=WEIGHT_INITS)
    dynamic_weight_rescaling: bool = option(False, "Scale each layer by numel / ones of its current mask.")
    sparsity_pattern: str = option("unstructured", f"topk: the units the mask keeps ({PATTERNS}): the "
                                   "keep_fraction of blocks with the largest mean |score|, or n of every m "
                                   "(keep_fraction=n/m). Dense and convolution kernels take it.")

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ConfigError("estimator", f"{self.estimator!r} is not one of {list(ESTIMATORS)}.")
        check_options(self.estimator, self.eval_mask, self.keep_fraction, mode_field="estimator",
                      sparsity_pattern=self.sparsity_pattern)

    def layer_options(self, seed=0) -> dict:
        """The masked-layer options of this supermask (``build_model`` and ``mask_model`` take them); ``seed``
        keys the top-k scores' draw and the Bernoulli masks."""
        return {"mask_mode": self.estimator, "keep_fraction": self.keep_fraction, "score_init": self.score_init,
                "eval_mask": self.eval_mask, "dynamic_weight_rescaling": self.dynamic_weight_rescaling,
                "sample_seed": seed, "sparsity_pattern": self.sparsity_pattern}
        if self.weight_init not in WEIGHT_INITS:
            raise ConfigError("weight_init", f"{self.weight_init!r} is not one of {list(WEIGHT_INITS)}.")


@dataclasses.dataclass(frozen=True)
class UntrainedConfig:
    """Masks scored on untrained weights: from a dense run by a criterion at each density, or an IMP round's."""

    from_run: str = option(None, "Untrained-mask mode: an lt-train run (init_weights.npz + model.keras) or an "
                           "lt-imp run (with --from_round).")
    from_round: int = option(None, "lt-imp round whose mask is evaluated untrained.", lower_bound=0)
    criterion: str = option("large_final_same_sign", "Untrained-mask mode: mask criterion.")
    mask1: str = option("signed_constant", "Untrained-mask mode: mask-1 action for the kept weights.")
    densities: tuple = option((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                              "Untrained-mask mode: fractions of weights kept, per layer.", item=float)

    def __post_init__(self):
        if self.criterion not in criterion_names():
            raise ConfigError("criterion", f"{self.criterion!r} is not one of {criterion_names()}.")
        if self.mask1 not in mask1_action_names():
            raise ConfigError("mask1", f"{self.mask1!r} is not one of {mask1_action_names()}.")
        for density in self.densities:
            if not 0 < density <= 1:
                raise ConfigError("densities", f"{density} is outside (0, 1].")


def to_supermask(model, estimator="bernoulli", keep_fraction=0.5, score_init=0.0, eval_mask=None,
                 dynamic_weight_rescaling=False, seed=0, sparsity_pattern="unstructured"):
    """A copy of ``model`` whose masked layers learn supermasks over their (frozen) weights.

    ``seed`` keys the top-k scores' draw and the Bernoulli masks (with each
    layer's name and draw count). A registered model is built as a supermask
    model directly: ``build_model(name, ..., **LearnConfig(...).layer_options(seed))``."""
    config = LearnConfig(estimator=estimator, keep_fraction=keep_fraction, score_init=score_init,
                         eval_mask=eval_mask, dynamic_weight_rescaling=dynamic_weight_rescaling,
                         sparsity_pattern=sparsity_pattern)
    return mask_model(model, **config.layer_options(seed))


def _fan_in(shape):
    return int(np.prod(shape[:-1]))


def init_weights(model, scheme="glorot_normal", seed=0):
    """Set every masked layer's kernel by ``scheme`` (biases to zero), deterministically from ``seed``.

    ``signed_constant`` is sign(w) x std(w) of a Glorot-normal draw (Zhou et
    al.); ``kaiming_normal`` is N(0, 2 / fan_in), untruncated, as the
    edge-popup code's ``kaiming_normal_`` (Keras's HeNormal truncates at 2
    std); ``signed_kaiming_constant`` is sign(w) x sqrt(2 / fan_in).
    """
    if scheme not in WEIGHT_INITS:
        raise ConfigError("weight_init", f"{scheme!r} is not one of {list(WEIGHT_INITS)}.")
    for i, layer in enumerate(masked_layers(model)):
        shape = tuple(layer.kernel.shape)
        base = (keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed + i)
                if scheme == "kaiming_normal" else keras.initializers.GlorotNormal(seed + i))
        w = base(shape).numpy()
        if scheme == "signed_constant":
            w = np.sign(w) * np.std(w)
        elif scheme == "signed_kaiming_constant":
            w = np.sign(w) * np.sqrt(2.0 / _fan_in(shape))
        layer.kernel.assign(w.astype(np.float32))
        if layer.use_bias:
            layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
    return model


def set_eval_mask(model, eval_mask):
    """Switch the inference mask of every supermask layer (drops Keras's cached predict/test functions)."""
    for layer in masked_layers(model):
        if layer.is_supermask:
            layer.eval_mask = check_options(layer.mask_mode, eval_mask)
    model.test_function = model.predict_function = None
    return model


def evaluate(model, data, eval_mask=None, samples=10, batch_size=256):
    """Test accuracy of a (compiled, with an ``accuracy`` metric) supermask model under ``eval_mask``.

    ``data`` is a ``tf.data.Dataset`` of (x, y) batches or an ``(x, y)`` pair
    of arrays (batched by ``batch_size``). ``sampled``: mean (and std) over
    ``samples`` independently sampled masks, as Zhou et al. report;
    ``expected`` and ``topk`` are deterministic.
    """
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise LtKerasError(f"supermask.evaluate: data must be a dataset or an (x, y) pair, got {len(data)} items.")
        x, y = data
        data = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y))).batch(batch_size)
    elif not isinstance(data, tf.data.Dataset):
        raise LtKerasError(f"supermask.evaluate: data must be a tf.data.Dataset or an (x, y) pair, got "
                           f"{type(data).__name__}.")
    if eval_mask is not None:
        set_eval_mask(model, eval_mask)
    modes = {l.eval_mask for l in masked_layers(model) if l.is_supermask}
    runs = samples if "sampled" in modes else 1
    results = [model.evaluate(data, verbose=0, return_dict=True) for _ in range(runs)]
    if "accuracy" not in results[0]:
        raise LtKerasError(f"supermask.evaluate: compile the model with metrics=['accuracy'] (it reports "
                           f"{sorted(results[0])}).")
    accuracies = [float(r["accuracy"]) for r in results]
    return {"eval_mask": ",".join(sorted(modes)) or "fixed", "samples": runs,
            "accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies))}


def hard_mask(model) -> Mask:
    """The learned supermask as a fixed ``Mask`` (expected mask for Bernoulli, top-k for edge-popup)."""
    return Mask({mask_key(l): l.hard_mask().numpy() for l in masked_layers(model)})


def expected_density(model) -> float:
    """Mean keep-probability of the Bernoulli layers (the top-k fraction for edge-popup)."""
    kept = total = 0.0
    for layer in masked_layers(model):
        if layer.is_supermask:
            probs = tf.sigmoid(layer.kernel_scores) if layer.mask_mode == "bernoulli" else layer.hard_mask()
            kept += float(tf.reduce_sum(probs * layer.kernel_mask))
            total += float(np.prod(layer.kernel.shape))
    return kept / total if total else 1.0


def to_ticket(model):
    """A fixed-mask model with the frozen weights and the final hard mask: the supermask's ticket.

    With dynamic weight rescaling the rescaled kernel is stored, so the ticket
    computes exactly what the supermask computed with its hard mask.
    """
    mask = hard_mask(model)
    kernels = {mask_key(l): l.deterministic_kernel().numpy() for l in masked_layers(model)}
    ticket = mask_model(model, mask_mode="fixed", dynamic_weight_rescaling=False, sparsity_pattern="unstructured")
    for layer in masked_layers(ticket):
        layer.kernel.assign(kernels[mask_key(layer)])
    mask.apply_to(ticket)
    return ticket


class MaskDensityLogger(keras.callbacks.Callback):
    """Adds ``mask_density`` (expected fraction of kept weights) to the epoch logs of any ``model.fit``."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["mask_density"] = expected_density(self.model)


def criterion_mask(init_kernels, final_kernels, criterion, density, seed=0) -> Mask:
    """Mask keeping ``density`` of each tensor by a Zhou et al. criterion of (init, final) weights: their count
    (truncated) and random order among equal scores."""
    if not 0 < density <= 1:
        raise ConfigError("density", f"must be in (0, 1], got {density}.")
    rng = np.random.RandomState(seed)
    scores = {key: score(criterion, init_kernels[key], final_kernels[key], rng) for key in init_kernels}
    ones = Mask({key: np.ones(np.shape(v), np.float32) for key, v in init_kernels.items()})
    if density == 1:
        return ones
    return prune_layerwise(scores, ones, {key: 1.0 - density for key in init_kernels}, rng=rng, count_rule="floor")


def untrained_accuracy(model, mask: Mask, mask1, dataset, seed=0):
    """Accuracy of ``model``'s current (untrained) weights under ``mask`` and a mask-1 action, no training."""
    rng = np.random.RandomState(seed)
    mask.check_fits(model)
    for layer in masked_layers(model):
        key = mask_key(layer)
        layer.kernel.assign(apply_mask1(mask1, layer.kernel.numpy(), mask[key], rng))
    mask.apply_to(model)
    if model.optimizer is None:
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.test_function = None
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])
