"""Iterative magnitude pruning (Frankle & Carbin 2019) with Zhou et al.'s ablations.

Round 0 trains the dense network; every later round prunes the previous
round's survivors by a mask criterion, rewinds the kept weights (to theta_0,
to the weights after K steps, or not at all) through a mask-1 action, and
trains again. ``imp_rounds`` is the round engine; ``find_ticket`` runs it
around a user's own training loop, and ``lt_keras.methods.imp`` runs it as a
run directory that resumes (``lt-imp``).
"""
import contextlib
import dataclasses
import os
import typing

from absl import logging

from lt_keras._keras import keras
from lt_keras.actions import (NEEDS_FINAL_WEIGHTS, NEEDS_FRESH_DRAW, apply_mask0, check_mask0, kept_start,
                              mask1_action_names, mask1_start)
from lt_keras.criteria import criterion_names, score
from lt_keras.duration import EXAMPLES, Duration, iterations
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.io_utils import load_weights, save_weights
from lt_keras.keras3 import not_keras2_message
from lt_keras.layers import MASKED_CONVOLUTIONS, masked_layers
from lt_keras.mask import Mask, mask_key, pattern_keys
from lt_keras.options import option
from lt_keras.patterns import PATTERNS, SparsityPattern, check_masks
from lt_keras.pruning import COUNT_RULES, prune_count, prune_global, prune_in_pattern, prune_layerwise
from lt_keras.seeds import rng_for, seed_globals
from lt_keras.precision import SearchPrecision
from lt_keras.ticket import TicketInfo, write_ticket
from lt_keras.training import reset_optimizer

CONTROLS = ("random_reinit", "random_prune")


@dataclasses.dataclass(frozen=True)
class Rewind:
    """Where the kept weights go back to each round: ``point`` zero is theta_0, K the weights after K (iterations
    or epochs, ``lt_keras.duration``) of round 0 (late rewinding), None no rewinding (the next round continues
    from the trained weights)."""

    point: typing.Optional[Duration]

    @classmethod
    def parse(cls, text) -> "Rewind":
        if text == "init":
            return cls(Duration())
        if text == "none":
            return cls(None)
        if isinstance(text, str) and text.startswith("step:"):
            point = Duration.parse(text[5:], "rewind")
            if point != Duration():
                return cls(point)
        raise ConfigError("rewind", f"expected init, none or step:K with K > 0 iterations or epochs ({EXAMPLES}), "
                          f"got {text!r}.")

    @property
    def late(self) -> bool:
        return self.point is not None and self.point != Duration()

    def step(self, steps_per_epoch=None):
        """The rewind point in iterations (None: no rewinding)."""
        return None if self.point is None else iterations(self.point.value, "rewind", steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class ImpConfig:
    rounds: int = option(3, "Pruning rounds after the dense round 0.")
    target_density: float = option(None, "One-shot: prune once to this fraction of weights (overrides --rounds).")
    allocation: str = option("layerwise", "layerwise (rates by layer kind) or global (one pooled rate).")
    prune_rate_fc: float = option(0.2, "Per-round pruning rate of hidden dense layers (0: not pruned).")
    prune_rate_conv: float = option(0.1, "Per-round pruning rate of convolutions (0: not pruned).")
    prune_rate_output: float = option(0.1, "Per-round pruning rate of the output layer (0: not pruned).")
    prune_rate: float = option(0.2, "Per-round pooled rate with --allocation=global.")
    rewind: str = option("init", "init (theta_0), step:K (weights after K iterations or epochs: step:500, step:5ep) "
                         "or none.")
    criterion: str = option("large_final", "Mask criterion (Zhou et al.; lt_keras.criteria).")
    mask1: str = option("init", "Mask-1 action for the kept weights at rewind (lt_keras.actions).")
    mask1_rescaling: bool = option(False, "Multiply the kept weights by numel / ones of each layer's mask "
                                   "(Zhou et al.'s *_rescaling variants).")
    mask0: str = option("zero", "Mask-0 action for pruned weights: zero, freeze_init (keep theta_0), "
                        "freeze_init_zero_mask, freeze_init_zero_all, freeze_init_zero_reshuffle, freeze_init_zero_rev "
                        "(see lt_keras.actions).")
    controls: tuple = option((), "Baselines trained every round: random_reinit, random_prune.")
    prune_count: str = option("round", "How rate x remaining becomes a count: floor (Zhou et al.'s code), round "
                              "(half up), ceil (open_lth).", choices=COUNT_RULES)
    sparsity_pattern: str = option("unstructured", f"Units the masks are pruned in: {PATTERNS}. Blocks are scored "
                                   "by their weights' mean and pruned whole at the rates (counted in blocks); n:m "
                                   "prunes once, to n/m (--target_density=n/m). Dense and convolution kernels take "
                                   "it; other layers are pruned unstructured.")

    def __post_init__(self):
        if self.target_density is None and self.rounds < 1:
            raise ConfigError("rounds", f"must be >= 1, got {self.rounds}.")
        if self.target_density is not None and not 0 < self.target_density < 1:
            raise ConfigError("target_density", f"must be in (0, 1), got {self.target_density}.")
        if self.allocation not in ("layerwise", "global"):
            raise ConfigError("allocation", f"{self.allocation!r} is not one of ['layerwise', 'global'].")
        for name in ("prune_rate_fc", "prune_rate_conv", "prune_rate_output"):  # 0: that kind stays dense
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(name, f"pruning rate must be in [0, 1), got {value}.")
        if not 0 < self.prune_rate < 1:
            raise ConfigError("prune_rate", f"pruning rate must be in (0, 1), got {self.prune_rate}.")
        if self.criterion not in criterion_names():
            raise ConfigError("criterion", f"{self.criterion!r} is not one of {criterion_names()}.")
        if self.mask1 not in mask1_action_names():
            raise ConfigError("mask1", f"{self.mask1!r} is not one of {mask1_action_names()}.")
        check_mask0(self.mask0)
        if self.prune_count not in COUNT_RULES:
            raise ConfigError("prune_count", f"{self.prune_count!r} is not one of {list(COUNT_RULES)}.")
        unknown = sorted(set(self.controls) - set(CONTROLS))
        if unknown:
            raise ConfigError("controls", f"unknown {unknown}; choose from {list(CONTROLS)}.")
        object.__setattr__(self, "rewind_to", Rewind.parse(self.rewind))  # parsed once; not a field
        pattern = SparsityPattern.parse(self.sparsity_pattern)
        object.__setattr__(self, "pattern", pattern)  # parsed once; not a field
        if pattern.kind == "n:m" and (self.target_density is None or abs(self.target_density - pattern.density) > 1e-9):
            raise ConfigError("sparsity_pattern", f"{pattern.text} prunes once, to {pattern.density:g} of the weights: "
                              f"set target_density={pattern.density:g} (got {self.target_density}).")

    @property
    def total_rounds(self):
        return 1 if self.target_density is not None else self.rounds


def _rate_flags(model, config: ImpConfig) -> dict:
    """Mask key -> the setting that gives its per-round pruning rate (the last masked layer is the output)."""
    layers = masked_layers(model)
    flags = {}
    for i, layer in enumerate(layers):
        if config.target_density is not None:
            flags[mask_key(layer)] = "target_density"
        elif i == len(layers) - 1:
            flags[mask_key(layer)] = "prune_rate_output"
        else:
            flags[mask_key(layer)] = "prune_rate_conv" if isinstance(layer, MASKED_CONVOLUTIONS) else "prune_rate_fc"
    return flags


def layer_rates(model, config: ImpConfig) -> dict:
    """Per-tensor pruning rates by layer kind (the last masked layer is the output); a kind at rate 0 is left
    out, so its tensors stay dense."""
    rates = {key: 1.0 - config.target_density if flag == "target_density" else getattr(config, flag)
             for key, flag in _rate_flags(model, config).items()}
    kept = {key: rate for key, rate in rates.items() if rate > 0}
    if not kept:
        raise ConfigError("prune_rate_conv", "every layer kind of this model has pruning rate 0: nothing would be "
                          "pruned.")
    return kept


def min_kept(layer) -> int:
    """The fewest weights a layer may keep: one per output unit / filter; with fewer, some outputs have no
    input at all, and the ticket is degenerate."""
    return layer.output_channels


def _refuse_starved(layer, kept, when, cause):
    """The one message for a layer left fewer weights than ``min_kept``."""
    raise LtKerasError(f"layer {layer.name!r} would keep {kept} of {layer.kernel.shape.num_elements()} weights"
                       f"{when}, fewer than its {min_kept(layer)} outputs (some outputs would have no input); "
                       f"{cause}.")


def check_mask_viable(model, mask: Mask, cause="the mask"):
    """Refuse a mask that leaves a layer fewer weights than ``min_kept``, naming the layer and the cause."""
    for layer in masked_layers(model):
        kept = int(mask[mask_key(layer)].sum())
        if kept < min_kept(layer):
            _refuse_starved(layer, kept, "", cause)


def check_schedule(model, config: ImpConfig):
    """Refuse, before any training, a layer-wise or one-shot schedule that would end in a degenerate layer."""
    if config.allocation == "global" and config.target_density is None:
        return  # the pooled rate's split between layers is known only round by round: checked then
    rates, flags = layer_rates(model, config), _rate_flags(model, config)
    for layer in masked_layers(model):
        key = mask_key(layer)
        kept = layer.kernel.shape.num_elements()
        for k in range(1, config.total_rounds + 1):
            kept -= prune_count(rates.get(key, 0.0), kept, config.prune_count)
            if kept < min_kept(layer):
                fix = "raise target_density" if flags[key] == "target_density" else f"lower {flags[key]} or rounds"
                _refuse_starved(layer, kept, f" after round {k}", fix)


def kernels(model) -> dict:
    """Each masked layer's effective kernel: its kept weights, and at pruned positions what the layer computes
    with (0, or the frozen mask-0 values). theta_final must be this: a weight a mask-0 action zeroed in an
    earlier round stays zero (its final value is 0), as in the authors' code."""
    return {mask_key(l): l.masked_kernel(training=False).numpy() for l in masked_layers(model)}


class _Snapshot(keras.callbacks.Callback):
    """Keeps the model's weights after exactly ``step`` training steps (late rewinding).

    ``exact_steps`` tells ``lt_keras.training.fit`` to end a call at that step
    (``steps_per_execution``); under a user's own compile with N steps per
    call, ``step`` must be a multiple of N, or the snapshot refuses.
    """

    def __init__(self, step, path=None):
        """With ``path`` the snapshot is saved there when taken and read back if taken before: a round
        resumed past ``step`` from its backup still has it."""
        super().__init__()
        self.step, self.weights, self.path = step, None, path
        self.exact_steps = (step,)
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.exists(path):
                self.weights = load_weights(path)

    def on_train_batch_end(self, batch, logs=None):
        if self.weights is not None:
            return
        done = int(self.model.optimizer.iterations.numpy())
        if done == self.step:
            self.weights = self.model.get_weights()
            if self.path:
                save_weights(self.path, self.weights)
        elif done > self.step:
            per_call = getattr(self.model, "_steps_per_execution", None)
            per_call = int(per_call.numpy()) if per_call is not None else 1
            raise ConfigError("rewind", f"step:{self.step} fell inside a call of {per_call} training steps; "
                              f"compile with a steps_per_execution that divides {self.step}.")


def _set_start(model, rewind_weights, mask, imp, rng, fresh=None, init_kernels=None, final_kernels=None,
               chain_kernels=None) -> dict:
    """Load the rewind point, apply the mask-1 action to the kept kernels, the mask-0 action to the frozen
    pruned values, and the mask; returns each kernel's whole starting tensor (``mask1_start``).

    ``fresh`` maps mask keys to new draws from the initializers (``reinit``,
    ``signed_reinit``). ``init_kernels`` / ``final_kernels`` are theta_0 and
    the trained kernels the mask was computed from, which the mask-0 actions
    that zero moved weights compare; none in the dense round.
    ``chain_kernels``: the previous round's whole starting tensors, which the
    mask-1 action applies to (the authors' iterative chains); None in round 1
    and with ``mask1_rescaling`` (the rewind point's kernels then).
    """
    model.set_weights(rewind_weights)
    starts = {}
    for layer in masked_layers(model):
        key = mask_key(layer)
        kernel = layer.kernel.numpy()
        if imp.mask1 != "init" or imp.mask1_rescaling:
            draw = fresh[key] if fresh is not None else None
            base = kernel if chain_kernels is None or imp.mask1_rescaling else chain_kernels[key]
            kernel = mask1_start(imp.mask1, base, mask[key], rng, draw, imp.mask1_rescaling)
        starts[key] = kernel
        kernel = kernel * mask[key]
        if layer.mask0 in NEEDS_FINAL_WEIGHTS and final_kernels is not None:
            layer.kernel_frozen.assign(apply_mask0(layer.mask0, init_kernels[key], final_kernels[key], mask[key], rng))
            kernel = kept_start(layer.mask0, kernel, init_kernels[key], final_kernels[key])
        layer.kernel.assign(kernel)
    mask.apply_to(model)
    return starts


@dataclasses.dataclass
class RoundState:
    """Where IMP stands before round ``k``: the mask it trains with, the weights it rewinds to, the kernels
    the previous round trained (theta_final of the mask-0 actions; None before round 1), and the previous
    round's whole starting kernels, which a mask-1 action applies to (None before round 2: the rewind point)."""

    k: int
    mask: Mask
    rewind_weights: list
    final_kernels: typing.Optional[dict] = None
    chain_kernels: typing.Optional[dict] = None


@dataclasses.dataclass
class TrainedRound:
    """One finished round: its mask, what ``train_round`` returned, and the state the next round starts from."""

    k: int
    mask: Mask
    trained: object
    next: RoundState


def imp_rounds(model, config: ImpConfig, seed, train_round, state: RoundState, init_kernels, fresh_draw=None,
               before_train=None, after_round=None, snapshot_path=None, steps_per_epoch=None) -> RoundState:
    """The IMP round engine, shared by ``find_ticket`` and ``search``: rounds ``state.k`` .. ``total_rounds``.

    Each round after the dense one loads the rewind point, applies the mask-1
    and mask-0 actions and the mask, then ``before_train(k, model, mask)``,
    ``train_round(k, model, callbacks)`` (which must pass the callbacks on:
    the late-rewinding snapshot), and prunes by the criterion.
    ``after_round(TrainedRound)`` is where a caller saves the round
    atomically. ``fresh_draw(k)`` returns new initializer draws for the
    mask-1 actions that need them. ``snapshot_path(k)`` is where the
    late-rewind snapshot persists (``_Snapshot``). ``steps_per_epoch`` resolves a
    rewind point given in epochs. Random draws derive from (``seed``, round,
    purpose) (``lt_keras.seeds``).
    """
    rates = layer_rates(model, config)
    patterned = pattern_keys(model)
    step = config.rewind_to.step(steps_per_epoch)
    for k in range(state.k, config.total_rounds + 1):
        mask, chain = state.mask, None
        if k > 0:
            check_mask_viable(model, mask, f"round {k}'s mask comes from allocation={config.allocation!r}; "
                                           "lower the rates")
            fresh = fresh_draw(k) if config.mask1 in NEEDS_FRESH_DRAW else None
            starts = _set_start(model, state.rewind_weights, mask, config, rng_for(seed, k, "mask1"), fresh,
                                init_kernels, state.final_kernels, state.chain_kernels)
            chain = starts if config.mask1 != "init" and not config.mask1_rescaling else None  # only these chain
        start_kernels = kernels(model)
        if before_train is not None:
            before_train(k, model, mask)
        snapshot = None
        if k == 0 and config.rewind_to.late:
            snapshot = _Snapshot(step, snapshot_path(k) if snapshot_path else None)
        trained = train_round(k, model, [snapshot] if snapshot else [])
        rewind_weights = state.rewind_weights
        if snapshot is not None:
            if snapshot.weights is None:
                raise ConfigError("rewind", f"step:{step} is past the {_steps_run(model)} steps round 0 trained "
                                  "(were the callbacks passed on to fit?).")
            rewind_weights = snapshot.weights
        elif step is None:  # no rewinding: the next round continues from the trained weights
            rewind_weights = model.get_weights()
        final_kernels = kernels(model)
        next_mask = mask if k == config.total_rounds else _next_mask(
            config, start_kernels, final_kernels, mask, rates, rng_for(seed, k, "criterion"), patterned)
        state = RoundState(k + 1, next_mask, rewind_weights, final_kernels, chain)
        if after_round is not None:
            after_round(TrainedRound(k, mask, trained, state))
    return state


def _steps_run(model):
    optimizer = getattr(model, "optimizer", None)
    return int(optimizer.iterations.numpy()) if optimizer is not None else 0


def _next_mask(imp, start_kernels, final_kernels, mask, rates, rng, patterned=()):
    """Prune ``mask`` by the criterion's scores of this round's starting vs trained kernels, the tensors in
    ``patterned`` in ``imp.pattern``'s units; equal scores are pruned in a random order drawn from ``rng`` (after
    the criterion's own draws), as in Zhou et al.'s code. The result is checked against the pattern."""
    scores = {key: score(imp.criterion, start_kernels[key], final_kernels[key], rng, mask[key])
              for key in final_kernels}

    def prune(scores, mask):
        if imp.allocation == "global":
            return prune_global(scores, mask, imp.prune_rate, rng=rng, count_rule=imp.prune_count)
        return prune_layerwise(scores, mask, rates, rng=rng, count_rule=imp.prune_count)

    pruned = prune_in_pattern(scores, mask, imp.pattern, patterned, prune, rng)
    check_masks(pruned, imp.pattern, [k for k in patterned if k in pruned], "IMP mask")
    return pruned


def write_round_ticket(folder, model, mask, imp, k, precision):
    """The round's ticket: the fp32 masked model at its starting weights, its mask, and what it is."""
    write_ticket(folder, precision.to_fp32(model), mask, TicketInfo("imp", precision.precision, {
        "round": k, "criterion": imp.criterion, "rewind": imp.rewind, "mask1": imp.mask1, "mask0": imp.mask0,
        **({"sparsity_pattern": imp.pattern.text} if imp.pattern.structured else {}), **precision.bits}))


@dataclasses.dataclass
class TicketSearch:
    """What ``find_ticket`` found: the final mask and one record per round."""

    mask: Mask
    masks: list  # the mask each round trained with; masks[0] is the starting mask
    rounds: list  # per round: round, density, layer_density, train (train_fn's return), evaluation


class _CallbacksReached(keras.callbacks.Callback):
    """Rides with find_ticket's callbacks: ``began`` says that fit received them."""

    began = False

    def on_train_begin(self, logs=None):
        self.began = True


@contextlib.contextmanager
def _fails_fast_without(model, reached):
    """Make ``model``'s first training call fail when fit was not given find_ticket's callbacks.

    Keras builds the train function before the callbacks' ``on_train_begin``
    and calls it after, so a wrapper around it sees the mistake at the first
    batch instead of after a whole round. Restored on exit.
    """
    build = model.make_train_function

    def checked_build(force=False):
        inner = build(force)
        inner = getattr(inner, "_lt_inner", inner)

        def train_function(*args, **kwargs):
            if not reached.began:
                raise LtKerasError("find_ticket: train_fn(model, callbacks) must pass the callbacks on, as "
                                   "model.fit(..., callbacks=callbacks); this fit did not receive them.")
            return inner(*args, **kwargs)

        train_function._lt_inner = inner
        return train_function

    model.make_train_function = checked_build
    try:
        yield
    finally:
        del model.make_train_function
        model.train_function = getattr(model.train_function, "_lt_inner", model.train_function)


def find_ticket(model, train_fn, config: ImpConfig = ImpConfig(), evaluate_fn=None, output_dir=None, seed=0,
                steps_per_epoch=None):
    """Run IMP rounds around the user's own training loop; returns a ``TicketSearch``.

    ``model`` is a compiled model with masked layers (see ``mask_model``); its
    current weights are theta_0 and its current mask the starting mask.
    ``train_fn(model, callbacks)`` trains it in place, normally
    ``model.fit(..., callbacks=callbacks)``; the callbacks are ours (late
    rewinding) and must be passed on (a fit without them fails at its first
    batch); with your own
    ``compile(steps_per_execution=N)``, a late rewind ``step:K`` needs K to be
    a multiple of N (Keras runs the callbacks only after each call of N
    steps; refused otherwise). ``evaluate_fn(model)``, if given, is
    called after each round's training and its result recorded. Between
    rounds the kept weights are rewound per ``config`` and the optimizer's
    state and step counter are zeroed. With ``output_dir`` each round's
    ticket is written to ``round_<k>/ticket`` in the common ticket format.
    The model ends trained at the last round's mask. The mask-0 actions that
    compare theta_0 with theta_final (``freeze_init_zero_*``) take theta_final
    from the model's kernels right after ``train_fn`` of the round that
    pruned; ``lt-imp`` keeps them in ``round_<k>/next.npz`` for a resume.
    Random draws derive from (``seed``, round, purpose). A rewind point in
    epochs (``step:5ep``) needs ``steps_per_epoch`` (your fit's batches per epoch).
    """
    if not isinstance(model, keras.Model):
        raise LtKerasError("find_ticket: " + not_keras2_message(model) + " Then mask it with lt_keras.mask_model "
                           "and compile the result.")
    layers = masked_layers(model)
    if not layers:
        raise LtKerasError(f"model {model.name!r} has no masked layers; convert it with lt_keras.mask_model first.")
    wrong = [l.name for l in layers if l.mask0 != config.mask0]
    if wrong:
        raise LtKerasError(f"config.mask0={config.mask0!r} but layers {wrong} were built with another mask0; "
                           f"convert with lt_keras.mask_model(model, mask0={config.mask0!r}).")
    check_schedule(model, config)
    search = TicketSearch(mask=Mask.from_model(model), masks=[], rounds=[])
    search.mask.apply_to(model)  # the starting mask, with zeros stored where it prunes

    def fresh_draw(k):
        seed_globals(seed, k, "mask1_draw")
        return {mask_key(l): l.kernel_initializer(l.kernel.shape).numpy() for l in layers}

    def before_train(k, model, mask):
        if k > 0:
            reset_optimizer(model)
        if output_dir is not None:
            write_round_ticket(os.path.join(output_dir, f"round_{k}", "ticket"), model, mask, config, k,
                               SearchPrecision())

    def after_round(done: TrainedRound):
        mask = done.mask
        search.rounds.append({"round": done.k, "density": mask.density(), "layer_density": mask.layer_densities(),
                              "train": done.trained, "evaluation": evaluate_fn(model) if evaluate_fn else None})
        search.masks.append(mask)
        logging.info("find_ticket round %d: %.2f%% of weights remain", done.k, 100 * mask.density())

    def train_round(k, model, callbacks):
        reached = _CallbacksReached()
        with _fails_fast_without(model, reached):
            return train_fn(model, callbacks + [reached])

    final = imp_rounds(model, config, seed, train_round,
                       RoundState(0, search.mask, model.get_weights()), kernels(model), fresh_draw,
                       before_train, after_round, steps_per_epoch=steps_per_epoch)
    search.mask = final.mask
    return search
