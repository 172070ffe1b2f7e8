"""Bernoulli supermask sampling as one fused op: mask ~ Bernoulli(sigmoid(scores)), straight-through.

Zhou et al. draw a fresh mask for every weight on every forward pass. On a
CPU that draw dominated the LeNet-300-100 step: with TensorFlow's Philox one
draw of its 266K-entry mask cost 2.0 ms under XLA and 0.9 ms without (the
Bernoulli step was 2.2x / 1.5x a plain Keras step). Here the random bits come
from Threefry-2x32 (Salmon et al. 2011, the generator JAX uses) written in
plain integer ops, so XLA fuses it with the sigmoid, the comparison, the
fixed mask, the kernel and the straight-through slope into one vectorized
loop: 0.29 ms / 0.51 ms (tools/bench.py). The forward pass is a compiled
function, so the model itself need not run under XLA.

Rounds: 13, the fewest with which Threefry-2x32 passes TestU01's BigCrush
(Salmon et al., Table 2; JAX and Random123 default to 20 as a margin). The
implementation is checked against Random123's known-answer vectors for 13
and 20 rounds (tests/test_bernoulli.py).

Element ``i`` of a layer's mask uses counter ``(i, 0)`` and the first output
word, under the 64-bit key the caller passes (a layer's seed and its sample
count, so a resumed run draws the same masks); its top 24 bits are compared with
``sigmoid(s) * 2**24``, an exact Bernoulli draw at 2^-24 resolution (a float32
uniform has 2^-23).
"""
from lt_keras._keras import tf
from lt_keras.straight_through import product, straight_through

ROUNDS = 13
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
_TWO_24 = float(2**24)


def _rotl(x, r):
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(x, r), tf.bitwise.right_shift(x, 32 - r))


def threefry2x32(c0, c1, k0, k1, rounds=ROUNDS):
    """Threefry-2x32 block function on uint32 tensors: counters (c0, c1), key (k0, k1) -> two words."""
    ks = (k0, k1, tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(k0, k1), tf.constant(_PARITY, tf.uint32)))
    x0, x1 = c0 + ks[0], c1 + ks[1]
    for r in range(rounds):
        x0 = x0 + x1
        x1 = tf.bitwise.bitwise_xor(_rotl(x1, _ROTATIONS[r % 8]), x0)
        if r % 4 == 3:  # key injection every four rounds
            s = (r + 1) // 4
            x0 = x0 + ks[s % 3]
            x1 = x1 + ks[(s + 1) % 3] + tf.constant(s, tf.uint32)
    return x0, x1


def random_bits(shape, key):
    """uint32 tensor of ``shape``: element i is Threefry-2x32(counter (i, 0), ``key``)'s first word."""
    key = tf.bitcast(tf.cast(key, tf.int32), tf.uint32)
    counter = tf.bitcast(tf.range(tf.reduce_prod(shape)), tf.uint32)
    x0, _ = threefry2x32(counter, tf.zeros_like(counter), key[0], key[1])
    return tf.reshape(x0, shape)


@tf.function(jit_compile=True)
def _forward(scores, key, factors):
    """The sampled mask and its straight-through slope sigmoid'(scores), both times ``factors``, in one pass."""
    prob = tf.sigmoid(scores)
    top24 = tf.cast(tf.bitwise.right_shift(random_bits(tf.shape(scores), key), 8), tf.float32)
    scale = product(factors, scores)
    return tf.where(top24 < tf.cast(prob, tf.float32) * _TWO_24, scale, tf.zeros_like(scale)), scale * prob * (1 - prob)


def sampled_mask(scores, key, *factors):
    """mask ~ Bernoulli(sigmoid(``scores``)) times ``factors`` (a fixed 0/1 mask, the kernel).

    Forward: a hard 0/1 sample, a function of ``key`` (two int32 words; a new
    key gives an independent mask). Backward (straight-through):
    d mask / d scores := sigmoid'(scores) times the factors; the factors get no gradient.
    """
    scores = tf.convert_to_tensor(scores)
    return straight_through(scores, *_forward(scores, key, [tf.cast(f, scores.dtype) for f in factors]))
