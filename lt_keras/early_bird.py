"""Early-Bird tickets (You et al. 2020): find the ticket early, by when its mask stops changing.

Training adds an L1 penalty on BatchNorm scale factors (network slimming).
Before training and after every epoch, for each pruning ratio p, one global
threshold on |gamma| over the prunable BatchNorm layers gives a channel mask
(or, with weight granularity, one global magnitude threshold over the masked
kernels). A FIFO keeps the last masks; the ticket has emerged when the newest
mask is within ``epsilon`` normalized Hamming distance of every other mask in
the full queue. As in You et al.'s code, the threshold is the sorted |gamma|
at index int(T * p), every channel at or below it pruned (int(T * p) + 1 of
T), and the mask at initialization is the queue's first (their check runs
before each epoch): a mask steady from the start emerges after
``queue_length - 1`` epochs. ``prune_rule="count"`` and
``initial_mask=False`` give the other choices (exactly round(T * p)
channels; the first mask after epoch 1).

``slim`` then builds the physically smaller network: pruned conv filters,
their BatchNorm entries, and the matching inputs of the next conv or dense
layer are removed, weights copied. A channel is prunable when its BatchNorm
follows a convolution and its output reaches only convolutions or dense
layers (through ReLU, pooling, dropout, flatten or global pooling); channels
that feed a residual addition are kept. Zeroing gamma and beta of the pruned
channels (``channel_masked``) gives exactly the slimmed network's outputs.
"""
import collections
import dataclasses
import glob
import os
import re

import numpy as np
from absl import logging

from lt_keras._keras import keras, tf
from lt_keras.convert import flatten_model
from lt_keras.errors import ConfigError, LtKerasError
from lt_keras.io_utils import load_weights, save_weights
from lt_keras.layers import masked_layers, unwrapped, walk_layers
from lt_keras.mask import Mask, mask_key
from lt_keras.options import option
from lt_keras.pruning import prune_global

GRANULARITIES = ("channel", "weight")
RETRAIN_FROM = ("eb", "scratch")
PRUNE_RULES = ("threshold", "count")


@dataclasses.dataclass(frozen=True)
class EarlyBirdConfig:
    """The Early-Bird search (You et al. 2020), its retraining and its LT one-shot baseline."""

    bn_l1: float = option(1e-4, "L1 penalty on BatchNorm scale factors (network slimming).", lower_bound=0)
    prune_ratios: tuple = option((0.3, 0.5, 0.7), "Channel pruning ratios tracked at once.", item=float)
    queue_length: int = option(5, "FIFO length of masks compared.", lower_bound=2)
    epsilon: float = option(0.1, "Early-Bird threshold on the normalized Hamming distance.")
    stop_at_eb: bool = option(True, "Stop the search once every ratio's ticket has emerged.")
    granularity: str = option("channel", "BN channels (slimming) or weights (magnitude).", choices=GRANULARITIES)
    retrain_from: str = option("eb", "Retrain from the EB weights or re-initialized.", choices=RETRAIN_FROM)
    retrain_ratios: tuple = option(None, "Ratios whose tickets are retrained (default: every emerged ratio).",
                                   item=float)
    run_baseline: bool = option(False, "Also train the LT one-shot baseline for its accuracy.")
    prune_rule: str = option("threshold", "threshold: prune every channel with |gamma| <= the sorted value at index "
                             "int(T * p) (You et al.'s code: int(T * p) + 1 channels); count: exactly round(T * p).",
                             choices=PRUNE_RULES)
    initial_mask: bool = option(True, "The mask at initialization enters the FIFO (You et al.'s code checks before "
                                "each epoch); false: the first mask is after epoch 1.")

    def __post_init__(self):
        if not self.prune_ratios or any(not 0 < r < 1 for r in self.prune_ratios):
            raise ConfigError("prune_ratios", f"each ratio must be in (0, 1), got {list(self.prune_ratios)}.")
        if self.retrain_ratios is None:
            object.__setattr__(self, "retrain_ratios", tuple(self.prune_ratios))
        if set(self.retrain_ratios) - set(self.prune_ratios):
            raise ConfigError("retrain_ratios", f"{sorted(set(self.retrain_ratios) - set(self.prune_ratios))} are "
                              "not in prune_ratios.")
        if self.queue_length < 2:
            raise ConfigError("queue_length", f"must be >= 2, got {self.queue_length}.")
        if not 0 <= self.epsilon < 1:
            raise ConfigError("epsilon", f"must be in [0, 1), got {self.epsilon}.")
        if self.granularity not in GRANULARITIES:
            raise ConfigError("granularity", f"{self.granularity!r} is not one of {list(GRANULARITIES)}.")
        if self.prune_rule not in PRUNE_RULES:
            raise ConfigError("prune_rule", f"{self.prune_rule!r} is not one of {list(PRUNE_RULES)}.")


_PASS = (keras.layers.ReLU, keras.layers.Activation, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
         keras.layers.Dropout)
_ELEMENTWISE = (keras.layers.ReLU, keras.layers.Activation, keras.layers.Dropout)  # keep a pooled channel axis
_REDUCE = (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def _consumers(layer, model_layers):
    return [n.outbound_layer for n in layer.outbound_nodes if n.outbound_layer in model_layers]


def _producers(layer):
    nodes = layer.inbound_nodes
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _blocker(layer, model_layers, after_reduce=False):
    """The first layer downstream of ``layer`` that a removed channel cannot pass; None when there is none."""
    for consumer in _consumers(layer, model_layers):
        kind = unwrapped(consumer)
        if isinstance(kind, keras.layers.Dense) or (isinstance(kind, keras.layers.Conv2D) and not after_reduce):
            continue
        if isinstance(kind, _ELEMENTWISE) or (isinstance(kind, _PASS) and not after_reduce):
            blocker = _blocker(consumer, model_layers, after_reduce)
        elif isinstance(kind, _REDUCE):  # a Flatten after a global pool keeps the channel axis
            blocker = _blocker(consumer, model_layers, after_reduce=True)
        else:
            blocker = consumer
        if blocker is not None:
            return blocker
    return None


def bn_prunability(model) -> dict:
    """For every BatchNorm of ``model`` (nested blocks included): None when prunable, else the reason why not.

    Nested blocks are read through ``flatten_model``'s one flat graph; the
    graph is read through quantization wrappers too.
    """
    flat = flatten_model(model)
    layers = set(flat.layers)
    out = {}
    for layer in flat.layers:
        if not isinstance(unwrapped(layer), keras.layers.BatchNormalization):
            continue
        producers, name = _producers(layer), unwrapped(layer).name
        if len(producers) != 1 or not isinstance(unwrapped(producers[0]), keras.layers.Conv2D):
            out[name] = "it does not follow a Conv2D"
        elif _consumers(producers[0], layers) != [layer]:
            out[name] = f"its convolution {unwrapped(producers[0]).name!r} also feeds other layers"
        else:
            blocker = _blocker(layer, layers)
            out[name] = (None if blocker is None else f"its channels reach {unwrapped(blocker).name!r} "
                         f"({type(unwrapped(blocker)).__name__}), which cannot drop them")
    return out


def prunable_bns(model, reasons=None):
    """BatchNorm layers whose channels can be removed (see the module docstring), in layer order.

    ``reasons``: ``bn_prunability(model)`` when the caller has it already
    (reading a nested model's graph clones it)."""
    reasons = bn_prunability(model) if reasons is None else reasons
    prunable = {name for name, reason in reasons.items() if reason is None}
    return [layer for layer in walk_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.name in prunable]


def log_prunability(model, reasons=None):
    """Log which BatchNorms Early-Bird can prune and why the others cannot."""
    reasons = bn_prunability(model) if reasons is None else reasons
    kept = [name for name, reason in reasons.items() if reason is None]
    logging.info("Early-Bird: %d of %d BatchNorm layers are prunable: %s", len(kept), len(reasons),
                 ", ".join(kept) or "(none)")
    for name, reason in reasons.items():
        if reason is not None:
            logging.warning("Early-Bird: BatchNorm %r is not prunable: %s.", name, reason)


def bn_key(layer):
    return layer.name + "/gamma"


def add_bn_l1(model, l1):
    """Add ``l1 * sum |gamma|`` over the prunable BatchNorm layers to the model's loss (network slimming)."""
    if l1 < 0:
        raise ConfigError("bn_l1", f"must be >= 0, got {l1}.")
    reasons = bn_prunability(model)
    gammas = [bn.gamma for bn in prunable_bns(model, reasons)]
    if not gammas:
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items()) or "it has none"
        raise LtKerasError(f"model {model.name!r} has no prunable BatchNorm channels ({why}); "
                           "use granularity='weight'.")
    if l1:
        model.add_loss(lambda: l1 * tf.add_n([tf.reduce_sum(tf.abs(g)) for g in gammas]))
    return model


def _threshold_mask(scores, ratio):
    """You et al.'s rule over the pooled scores: keep |gamma| > the sorted value at index int(T * ratio)."""
    pooled = np.sort(np.concatenate([v.ravel() for v in scores.values()]))
    threshold = pooled[min(int(pooled.size * ratio), pooled.size - 1)]
    return Mask({key: (v > threshold).astype(np.float32) for key, v in scores.items()})


def channel_mask(model, ratio, bns=None, rule="threshold") -> Mask:
    """Prune the fraction ``ratio`` of prunable channels with the smallest |gamma| (one global threshold;
    ``rule``: see ``EarlyBirdConfig.prune_rule``); ``bns``: ``prunable_bns(model)`` when the caller has it."""
    bns = prunable_bns(model) if bns is None else bns
    if not bns:
        raise LtKerasError(f"model {model.name!r} has no prunable BatchNorm channels.")
    scores = {bn_key(bn): np.abs(bn.gamma.numpy()) for bn in bns}
    if rule == "threshold":
        mask = _threshold_mask(scores, ratio)
    else:
        ones = Mask({key: np.ones_like(v, np.float32) for key, v in scores.items()})
        mask = prune_global(scores, ones, ratio)
    # Never remove a whole layer: keep its largest channel.
    arrays = dict(mask)
    for key, values in arrays.items():
        if not values.any():
            values = values.copy()
            values[int(np.argmax(scores[key]))] = 1.0
            arrays[key] = values
    return Mask(arrays)


def weight_mask(model, ratio, rule="threshold") -> Mask:
    """Prune the fraction ``ratio`` of all masked kernel weights with the smallest |w| (one global threshold)."""
    layers = masked_layers(model)
    if not layers:
        raise ConfigError("granularity", f"model {model.name!r} has no masked layers for 'weight'.")
    scores = {mask_key(l): np.abs(l.kernel.numpy()) for l in layers}
    if rule == "threshold":
        return _threshold_mask(scores, ratio)
    return prune_global(scores, Mask.ones_like(model), ratio)


def compute_mask(model, ratio, granularity, bns=None, rule="threshold"):
    if granularity not in GRANULARITIES:
        raise ConfigError("granularity", f"{granularity!r} is not one of {list(GRANULARITIES)}.")
    if rule not in PRUNE_RULES:
        raise ConfigError("prune_rule", f"{rule!r} is not one of {list(PRUNE_RULES)}.")
    return channel_mask(model, ratio, bns, rule) if granularity == "channel" else weight_mask(model, ratio, rule)


class EarlyBirdDetector:
    """FIFO of the last ``queue_length`` masks per ratio; records when each ratio's ticket emerged."""

    def __init__(self, ratios, queue_length=5, epsilon=0.1):
        EarlyBirdConfig(prune_ratios=tuple(ratios), queue_length=queue_length, epsilon=epsilon)  # checks them
        self.ratios, self.queue_length, self.epsilon = tuple(ratios), queue_length, epsilon
        self.queues = {r: collections.deque(maxlen=queue_length) for r in self.ratios}
        self.emerged = {}  # ratio -> epoch (epochs trained when it emerged)
        self.max_distance = {r: [] for r in self.ratios}  # per update: max distance to the queue (None if not full)

    def update(self, epoch, masks):
        """Add this epoch's masks ({ratio: Mask}); returns the ratios that emerged now."""
        new = []
        for ratio in self.ratios:
            queue = self.queues[ratio]
            queue.append(masks[ratio])
            if len(queue) < self.queue_length:
                self.max_distance[ratio].append(None)
                continue
            distance = max(queue[-1].hamming_distance(m) for m in list(queue)[:-1])
            self.max_distance[ratio].append(distance)
            if ratio not in self.emerged and distance <= self.epsilon:
                self.emerged[ratio] = epoch
                new.append(ratio)
        return new

    @property
    def all_emerged(self):
        return len(self.emerged) == len(self.ratios)


class EarlyBirdCallback(keras.callbacks.Callback):
    """Early-Bird detection inside any ``model.fit``: masks after every epoch, FIFO distances, EB epochs.

    Keeps every epoch's masks (for the distance matrix; ``epochs`` says
    which: 0 is the initial mask) and the weights at each ratio's EB epoch;
    with ``stop_at_eb`` it stops training once every ratio has emerged. Adds
    ``eb_distance_<ratio>`` to the epoch logs. ``prune_rule`` and
    ``initial_mask``: see ``EarlyBirdConfig``.

    With ``state_dir`` each epoch's masks and the EB weights are also written
    there, and ``restore(epochs)`` rebuilds the FIFOs, distances and EB
    weights of the first ``epochs`` epochs: a search resumed from a
    checkpoint (``lt_keras.training.fit``'s ``backup_dir``) detects exactly
    what an uninterrupted one does.
    """

    def __init__(self, ratios=(0.3, 0.5, 0.7), queue_length=5, epsilon=0.1, granularity="channel",
                 stop_at_eb=True, verbose=1, state_dir=None, prune_rule="threshold", initial_mask=True):
        super().__init__()
        self.state_dir = state_dir
        EarlyBirdConfig(prune_ratios=tuple(ratios), granularity=granularity, prune_rule=prune_rule)  # checks them
        self.detector = EarlyBirdDetector(ratios, queue_length, epsilon)
        self.granularity, self.stop_at_eb, self.verbose = granularity, stop_at_eb, verbose
        self.prune_rule, self.initial_mask = prune_rule, bool(initial_mask)
        self.history = {r: [] for r in self.detector.ratios}  # masks per entry of ``epochs``
        self.epochs = []  # the epoch of each mask in ``history`` (0: at initialization)
        self.eb_weights = {}
        self._bns = None  # the prunable BatchNorms, read once per fit: the graph does not change while training

    @property
    def emerged(self):
        return dict(self.detector.emerged)

    def on_train_begin(self, logs=None):
        if self.granularity == "channel":
            reasons = bn_prunability(self.model)
            log_prunability(self.model, reasons)
            self._bns = prunable_bns(self.model, reasons)
        if self.initial_mask and not self.epochs:  # a fresh search: the mask at initialization comes first
            self._add(0, self._masks_now(0))

    def _masks_now(self, epoch):
        """Every ratio's mask of the model as it is, saved (with ``state_dir``) as epoch ``epoch``'s."""
        if self.granularity == "channel" and self._bns is None:
            self._bns = prunable_bns(self.model)
        masks = {r: compute_mask(self.model, r, self.granularity, self._bns, self.prune_rule)
                 for r in self.detector.ratios}
        if self.state_dir:  # before the checkpoint of this epoch is written (callbacks run in order)
            for ratio, mask in masks.items():
                mask.save(self._state_file(epoch, ratio, "mask"))
        return masks

    def mask_at(self, ratio, epoch) -> Mask:
        """The mask of ``ratio`` computed after ``epoch`` epochs (0: at initialization)."""
        return self.history[ratio][self.epochs.index(epoch)]

    def on_epoch_end(self, epoch, logs=None):
        masks = self._masks_now(epoch + 1)
        emerged = self._add(epoch + 1, masks)
        for ratio in emerged:
            self.eb_weights[ratio] = self.model.get_weights()
            if self.state_dir:
                save_weights(self._state_file(epoch + 1, ratio, "weights"), self.eb_weights[ratio])
            if self.verbose:
                print(f"\nEarly-Bird ticket at prune ratio {ratio} emerged at epoch {epoch + 1}.", flush=True)
        if logs is not None:
            for ratio in self.detector.ratios:
                distance = self.detector.max_distance[ratio][-1]
                if distance is not None:
                    logs[f"eb_distance_{ratio}"] = distance
        if self.stop_at_eb and self.detector.all_emerged:
            self.model.stop_training = True

    def _add(self, epoch, masks):
        self.epochs.append(epoch)
        for ratio, mask in masks.items():
            self.history[ratio].append(mask)
        return self.detector.update(epoch, masks)

    def _state_file(self, epoch, ratio, what):
        return os.path.join(self.state_dir, f"epoch_{epoch:05d}_p{ratio}_{what}.npz")

    def restore(self, epochs):
        """Replay the saved masks of epochs 1..``epochs`` (the checkpoint's); drop what a killed try saved after."""
        if not self.state_dir or not os.path.isdir(self.state_dir):
            return self
        for path in glob.glob(os.path.join(self.state_dir, "epoch_*")):
            if int(re.match(r"epoch_(\d+)_", os.path.basename(path)).group(1)) > epochs:
                os.remove(path)
        first = 0 if os.path.exists(self._state_file(0, self.detector.ratios[0], "mask")) else 1
        for epoch in range(first, epochs + 1):
            masks = {r: Mask.load(self._state_file(epoch, r, "mask")) for r in self.detector.ratios}
            for ratio in self._add(epoch, masks):
                self.eb_weights[ratio] = load_weights(self._state_file(epoch, ratio, "weights"))
        if epochs:
            print(f"Early-Bird detector restored at epoch {epochs}: emerged {self.emerged or 'none yet'}.", flush=True)
        return self

    def distance_matrix(self, ratio) -> np.ndarray:
        """Normalized Hamming distance between the masks of every pair of epochs."""
        masks = self.history[ratio]
        n = len(masks)
        matrix = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                matrix[i, j] = matrix[j, i] = masks[i].hamming_distance(masks[j])
        return matrix


def channel_masked(model, mask: Mask):
    """A copy of ``model`` whose pruned channels output exactly zero (gamma and beta zeroed)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for bn in prunable_bns(copy):
        keep = mask.get(bn_key(bn))
        if keep is not None:
            bn.gamma.assign(bn.gamma * keep)
            bn.beta.assign(bn.beta * keep)
    return copy


def slim(model, mask: Mask):
    """The physically smaller network for a channel mask, with the weights copied.

    Outputs equal ``channel_masked(model, mask)`` (up to float rounding). A
    model with nested blocks comes back flat (``flatten_model``).
    """
    model = flatten_model(model)
    bns = {bn_key(bn): bn for bn in prunable_bns(model)}
    unknown = sorted(set(mask) - set(bns))
    if unknown:
        raise LtKerasError(f"channel mask keys {unknown} are not prunable BatchNorm layers of {model.name!r}.")
    conv_out = {}
    for key, values in mask.items():
        keep = np.flatnonzero(values)
        if keep.size == 0:
            raise LtKerasError(f"channel mask {key!r} removes every channel of its layer.")
        conv_out[_producers(bns[key])[0].name] = keep
    keep_of, in_keep = {}, {}
    for layer in model.layers:
        producers = _producers(layer)
        inputs = [keep_of.get(p.name) for p in producers]
        if len(inputs) > 1 and any(k is not None for k in inputs):
            raise LtKerasError(f"layer {layer.name!r} merges pruned channels; it cannot be slimmed.")
        current = inputs[0] if inputs else None
        in_keep[layer.name] = current
        if isinstance(layer, keras.layers.Conv2D):
            keep_of[layer.name] = conv_out.get(layer.name)
        elif isinstance(layer, keras.layers.Dense):
            keep_of[layer.name] = None
        elif isinstance(layer, keras.layers.Flatten) and current is not None:
            shape = layer.input_shape
            spatial, channels = int(np.prod(shape[1:-1])), shape[-1]
            keep_of[layer.name] = (np.arange(spatial)[:, None] * channels + current[None, :]).ravel()
        else:
            keep_of[layer.name] = current

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2D) and conv_out.get(layer.name) is not None:
            config["filters"] = int(conv_out[layer.name].size)
        return type(layer).from_config(config)

    slimmed = keras.models.clone_model(model, clone_function=clone)
    for old in model.layers:
        new = slimmed.get_layer(old.name)
        values = []
        for variable in old.weights:
            value = variable.numpy()
            if isinstance(old, (keras.layers.Conv2D, keras.layers.Dense)) and value.ndim >= 2:
                if in_keep[old.name] is not None:
                    value = np.take(value, in_keep[old.name], axis=-2)
                if keep_of[old.name] is not None:
                    value = np.take(value, keep_of[old.name], axis=-1)
            elif value.ndim == 1 and keep_of.get(old.name) is not None and not isinstance(old, keras.layers.Dense):
                value = value[keep_of[old.name]]
            values.append(value)
        new.set_weights(values)
    return slimmed
