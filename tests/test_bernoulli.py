"""The fused Bernoulli supermask sampler: its Threefry generator, its samples and its gradient."""
import numpy as np
import pytest

from lt_keras._keras import tf
from lt_keras.bernoulli import random_bits, sampled_mask, threefry2x32

# Random123 known-answer vectors (tests/kat_vectors): rounds, counter, key, expected output words.
KAT = [
    (13, (0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x9D1C5EC6, 0x8BD50731)),
    (13, (0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0xFD36D048, 0x2D17272C)),
    (13, (0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xBA3E4725, 0xF27D669E)),
    (20, (0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    (20, (0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    (20, (0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("rounds,counter,key,expected", KAT)
def test_threefry_matches_random123_known_answers(rounds, counter, key, expected):
    words = [tf.constant([v], tf.uint32) for v in (*counter, *key)]
    for jit in (False, True):
        out = tf.function(lambda: threefry2x32(*words, rounds=rounds), jit_compile=jit)()
        assert [int(o.numpy()[0]) for o in out] == list(expected)


def _bits(key, n=1 << 16):
    return tf.function(lambda: random_bits([n], tf.constant(key, tf.int32)), jit_compile=True)().numpy()


def test_random_bits_are_uniform_and_uncorrelated():
    bits = _bits([12345, -678])
    per_bit = ((bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(0)
    assert np.abs(per_bit - 0.5).max() < 0.01  # std of each mean: 0.002
    u = bits.astype(np.float64) / 2**32
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.003
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.02  # neighbouring counters
    counts = np.bincount((u * 16).astype(int), minlength=16)  # chi-square, 15 dof: p < 1e-4 above 42.3
    expected = len(u) / 16
    assert ((counts - expected) ** 2 / expected).sum() < 42.3


def test_random_bits_depend_on_the_key_only():
    a, b = _bits([1, 2], 1000), _bits([1, 3], 1000)
    np.testing.assert_array_equal(a, _bits([1, 2], 1000))
    assert np.mean(a == b) < 0.01
    u_a, u_b = a.astype(np.float64), b.astype(np.float64)
    assert abs(np.corrcoef(u_a, u_b)[0, 1]) < 0.1


@pytest.mark.parametrize("jit", [False, True])
def test_samples_follow_sigmoid_scores_and_stay_within_the_fixed_mask(jit):
    p = np.random.RandomState(0).uniform(0.02, 0.98, (40, 50)).astype(np.float32)
    scores = tf.constant(np.log(p / (1 - p)))
    within = tf.constant((np.arange(p.size).reshape(p.shape) % 3 > 0).astype(np.float32))
    draw = tf.function(lambda key: sampled_mask(scores, key, within), jit_compile=jit)
    samples = np.stack([draw(tf.constant([7, i])).numpy() for i in range(300)])
    assert set(np.unique(samples)) == {0.0, 1.0}
    assert np.all(samples[:, within.numpy() == 0] == 0)
    kept = within.numpy() > 0
    assert np.abs(samples.mean(0)[kept] - p[kept]).mean() < 0.025  # std of a mean of 300: <= 0.029
    assert not np.array_equal(samples[0], samples[1])  # a fresh mask per key
    np.testing.assert_array_equal(draw(tf.constant([7, 1])).numpy(), samples[1])  # the same mask for a key


@pytest.mark.parametrize("jit", [False, True])
def test_straight_through_gradient_is_within_times_sigmoid_derivative(jit):
    s = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    scores = tf.Variable(s)
    within = tf.constant(np.array([[1, 0, 1, 1]] * 3, np.float32))
    upstream = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))

    @tf.function(jit_compile=jit)
    def grad():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(upstream * sampled_mask(scores, tf.constant([3, 4]), within))
        return tape.gradient(loss, scores)

    sig = 1 / (1 + np.exp(-s))
    np.testing.assert_allclose(grad().numpy(), upstream.numpy() * within.numpy() * sig * (1 - sig), rtol=1e-5)
