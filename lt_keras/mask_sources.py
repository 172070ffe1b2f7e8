"""Where a masked layer's mask comes from: a fixed 0/1 mask, a Bernoulli supermask, or a top-k supermask.

A masked layer (``lt_keras.layers``) holds one source, chosen by its
``mask_mode``, and asks it for the kernel it computes with. Each source owns
what belongs to its kind of mask: the variables it adds, the mask of one
forward pass, the hard mask a ticket keeps, and its own fast path (a
supermask sampler multiplies the kernel into the mask in its compiled pass).
So no code path asks which kind of layer it is in, and a new kind of mask is
one class: subclass ``FixedMask`` (override ``mask``) or ``LearnedMask``
(override ``learned``), and return it from the layer's ``make_mask_source``.
"""
import numpy as np

from lt_keras._keras import keras, tf
from lt_keras.bernoulli import sampled_mask
from lt_keras.errors import ConfigError
from lt_keras.patterns import SparsityPattern
from lt_keras.seeds import derive_seed
from lt_keras.straight_through import product, straight_through
from lt_keras.topk import top_k_mask, top_k_masks


class FixedMask:
    """``kernel_mask`` alone: no gradient, no variables of its own."""

    mode = "fixed"
    eval_masks = ("fixed",)
    learns = False

    def __init__(self, layer):
        self.layer = layer

    def add_variables(self):
        """Create the source's own variables, after the layer's kernel, kernel_mask and kernel_frozen."""

    def mask(self, training=None):
        """The 0/1 tensor the kernel is multiplied by in this forward pass.

        A fixed mask takes no gradient; ``stop_gradient`` lets TensorFlow skip
        computing one (measured ~6% of a LeNet step without XLA)."""
        return tf.stop_gradient(self.layer.kernel_mask)

    def hard_mask(self):
        """The 0/1 mask a ticket keeps."""
        return tf.convert_to_tensor(self.layer.kernel_mask)

    def kernel(self, training=None, kernel=None):
        """The kernel the layer computes with: ``kernel`` (default: the layer's) under this pass's mask."""
        layer = self.layer
        return layer.compose(tf.cast(self.mask(training), layer.kernel.dtype), kernel)


class LearnedMask(FixedMask):
    """A supermask: trainable ``kernel_scores`` pick the mask (straight-through) over a frozen kernel, times the
    fixed ``kernel_mask`` (a supermask can be learned inside a ticket)."""

    learns = True

    def score_initializer(self):
        raise NotImplementedError

    def add_variables(self):
        layer = self.layer
        layer.kernel_scores = layer.add_weight(name="kernel_scores", shape=layer.kernel.shape,
                                               dtype=layer.kernel.dtype, initializer=self.score_initializer(),
                                               trainable=True)

    def learned(self, training=None, hard=False, factors=()):
        """The supermask for this pass times ``factors`` (the fixed mask, the kernel); straight-through unless
        ``hard``. The samplers multiply the factors into the mask and its slope in their own compiled pass."""
        raise NotImplementedError

    def mask(self, training=None):
        return self.learned(training, factors=[tf.stop_gradient(self.layer.kernel_mask)])

    def hard_mask(self):
        return self.layer.kernel_mask * self.learned(hard=True)

    def kernel(self, training=None, kernel=None):
        layer = self.layer
        if kernel is None and not layer.dynamic_weight_rescaling and layer.kernel_frozen is None:
            # The sampler returns kernel * mask itself: without XLA that saves a pass over the weights each way.
            return self.learned(training, factors=[tf.stop_gradient(layer.kernel_mask), layer.kernel])
        return super().kernel(training, kernel)


class BernoulliMask(LearnedMask):
    """Zhou et al.: mask ~ Bernoulli(sigmoid(scores)), a fresh draw every pass; expected mask: scores > 0.

    The layer counts its draws in a non-trainable ``sample_count`` and keys
    each draw by (``sample_seed``, its name, the count): the masks are a
    function of the checkpointed state, so a resumed run draws exactly the
    masks an uninterrupted one does."""

    mode = "bernoulli"
    eval_masks = ("sampled", "expected")

    def score_initializer(self):
        return keras.initializers.Constant(self.layer.score_init)

    def add_variables(self):
        super().add_variables()
        self.layer.sample_count = self.layer.add_weight(  # every replica draws the first replica's mask
            name="sample_count", shape=(), dtype=tf.int64, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def next_sample_key(self):
        """(seed of this layer, number of this draw): the key of a fresh, reproducible Bernoulli mask."""
        layer = self.layer
        count = layer.sample_count.assign_add(1)
        word = derive_seed(layer.sample_seed, 0, f"bernoulli/{layer.name}")  # 31 bits
        return tf.stack([tf.constant(word, tf.int32), tf.cast(count, tf.int32)])

    def learned(self, training=None, hard=False, factors=()):
        scores = self.layer.kernel_scores
        if not hard and (training or self.layer.eval_mask == "sampled"):
            return sampled_mask(scores, self.next_sample_key(), *factors)
        # expected mask: sigmoid(scores) > 0.5, with the slope of sigmoid(scores)
        prob = tf.sigmoid(scores)
        scale = product(factors, scores)
        mask, slope = scale * tf.cast(scores > 0.0, scores.dtype), scale * prob * (1.0 - prob)
        return mask if hard else straight_through(scores, mask, slope)


class TopKMask(LearnedMask):
    """Edge-popup: exactly round(keep_fraction * n) ones at the largest |scores|, slope sign(scores)."""

    mode = "topk"
    eval_masks = ("topk",)

    def __init__(self, layer):
        super().__init__(layer)
        self.pattern = SparsityPattern.parse(layer.sparsity_pattern)  # fixed with the layer's config

    def score_initializer(self):
        """As the edge-popup code (kaiming_uniform_(a=sqrt(5))): U(+-1/sqrt(fan_in)); drawn from (sample_seed,
        the layer's name), so the scores are the same however the model is built or converted."""
        seed = derive_seed(self.layer.sample_seed, 0, f"topk_scores/{self.layer.name}")
        return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed)

    def learned(self, training=None, hard=False, factors=()):
        scores, pattern = self.layer.kernel_scores, self.pattern
        if pattern.structured and self.layer.fan_in_by_out:
            scale = product([tf.cast(f, scores.dtype) for f in factors], scores)
            mask, slope = self.pattern_keep(pattern, scores) * scale, tf.sign(scores) * scale
        else:
            k = max(1, int(round(self.layer.keep_fraction * int(np.prod(scores.shape)))))
            mask, slope = top_k_masks(scores, k, *factors)
        return mask if hard else straight_through(scores, mask, slope)

    def pattern_keep(self, pattern, scores):
        """The 0/1 top-k mask in ``pattern``'s units: the keep_fraction of blocks with the largest mean |score|,
        or the n largest |scores| of every m consecutive inputs of an output (ties: lowest index)."""
        shape, out = scores.shape, int(scores.shape[-1])
        matrix = tf.reshape(tf.abs(tf.convert_to_tensor(scores)), (-1, out))
        fan_in = int(matrix.shape[0])
        if pattern.kind == "n:m":
            groups = -(-fan_in // pattern.m)
            padded = tf.pad(matrix, [[0, groups * pattern.m - fan_in], [0, 0]], constant_values=-1.0)
            ranked = tf.transpose(tf.reshape(padded, (groups, pattern.m, out)), (0, 2, 1))
            chosen = tf.reduce_sum(tf.one_hot(tf.math.top_k(ranked, pattern.n).indices, pattern.m, dtype=scores.dtype),
                                   axis=-2)
            keep = tf.reshape(tf.transpose(chosen, (0, 2, 1)), (groups * pattern.m, out))[:fan_in]
            return tf.reshape(keep, shape)
        blocks_in, blocks_out = -(-fan_in // pattern.cols), -(-out // pattern.rows)
        padded = tf.pad(matrix, [[0, blocks_in * pattern.cols - fan_in], [0, blocks_out * pattern.rows - out]])
        sums = tf.reduce_sum(tf.reshape(padded, (blocks_in, pattern.cols, blocks_out, pattern.rows)), axis=(1, 3))
        k = max(1, int(round(self.layer.keep_fraction * blocks_in * blocks_out)))
        kept = top_k_mask(sums / tf.constant(pattern.block_sizes((fan_in, out)), sums.dtype), k)
        full = tf.repeat(tf.repeat(kept, pattern.cols, axis=0), pattern.rows, axis=1)[:fan_in, :out]
        return tf.reshape(full, shape)


MASK_SOURCES = {source.mode: source for source in (FixedMask, BernoulliMask, TopKMask)}
MASK_MODES = tuple(MASK_SOURCES)
EVAL_MASKS = {mode: source.eval_masks for mode, source in MASK_SOURCES.items()}


def check_options(mask_mode, eval_mask=None, keep_fraction=0.5, mode_field="mask_mode", sparsity_pattern=None):
    """The one validation of the supermask options (the masked layers, ``LearnConfig`` and ``set_eval_mask`` call
    it); returns the evaluation mask, defaulting to the mode's first. ``mode_field`` names the mode in errors."""
    if mask_mode not in MASK_SOURCES:
        raise ConfigError(mode_field, f"{mask_mode!r} is not one of {list(MASK_MODES)}.")
    eval_mask = eval_mask or EVAL_MASKS[mask_mode][0]
    if eval_mask not in EVAL_MASKS[mask_mode]:
        raise ConfigError("eval_mask", f"{eval_mask!r} does not go with {mode_field}={mask_mode!r}; "
                          f"choose one of {list(EVAL_MASKS[mask_mode])}.")
    if not 0 < keep_fraction <= 1:
        raise ConfigError("keep_fraction", f"must be in (0, 1], got {keep_fraction}.")
    pattern = SparsityPattern.parse(sparsity_pattern or "unstructured")
    if pattern.structured and mask_mode != "topk":
        raise ConfigError("sparsity_pattern", f"{pattern.text} needs the top-k supermask ({mode_field}=topk); "
                          f"{mode_field}={mask_mode!r} keeps weights one by one.")
    if pattern.kind == "n:m" and abs(keep_fraction - pattern.density) > 1e-9:
        raise ConfigError("keep_fraction", f"{pattern.text} keeps {pattern.density:g} of the weights: set "
                          f"keep_fraction={pattern.density:g} (got {keep_fraction}).")
    return eval_mask
