"""Every fast formulation equals the plain Keras/TF formulation, forward and gradient."""

import keras
import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from mail_tf.layers import ChannelShuffle, GroupedPointwiseConv2D, channel_dct, dct_matrix


def _forward_and_grads(layer, kernel, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.sin(y))  # a non-linear loss, so gradients are not all equal
    gx, gk = tape.gradient(loss, [x, kernel])
    return y.numpy(), gx.numpy(), gk.numpy()


@pytest.mark.parametrize("cin,cout,groups,strides,size", [
    (64, 64, 16, 1, 8), (64, 128, 16, 2, 8), (192, 64, 2, 1, 6), (48, 32, 2, 2, 7), (32, 16, 1, 1, 5)])
def test_grouped_pointwise_equals_keras_grouped_conv(cin, cout, groups, strides, size):
    x = tf.random.stateless_normal((3, size, size, cin), seed=(1, 2))
    ref = keras.layers.Conv2D(cout, 1, strides=strides, groups=groups, bias_initializer="random_normal")
    ref.build(x.shape)
    fast = GroupedPointwiseConv2D(cout, groups=groups, strides=strides)
    fast.build(x.shape)
    assert fast.kernel.shape == ref.kernel.shape  # same layout: weights transfer as they are
    fast.set_weights(ref.get_weights())
    y0, gx0, gk0 = _forward_and_grads(ref, ref.kernel, x)
    y1, gx1, gk1 = _forward_and_grads(fast, fast.kernel, x)
    assert y1.shape == y0.shape
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gk1, gk0, rtol=1e-4, atol=1e-3)


def test_grouped_pointwise_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible by groups=16"):
        GroupedPointwiseConv2D(32, groups=16).build((None, 4, 4, 24))


@pytest.mark.parametrize("n", [8, 64, 128])
def test_dct_matrix_equals_scipy_and_tf_signal(n):
    x = np.random.default_rng(n).normal(size=(4, 3, 5, n)).astype(np.float32)
    expected = scipy.fft.dct(x.astype(np.float64), type=2, norm="ortho", axis=-1)
    ours = channel_dct(tf.constant(x)).numpy()
    tf_dct = tf.signal.dct(tf.constant(x), type=2, norm="ortho").numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(tf_dct, expected, atol=1e-5)
    # Orthonormal: M M^T = I, so the transform preserves energy.
    np.testing.assert_allclose(dct_matrix(n) @ dct_matrix(n).T, np.eye(n), atol=1e-12)


def test_dct_gradient_equals_tf_signal_gradient():
    x = tf.random.stateless_normal((2, 4, 4, 64), seed=(3, 4))
    w = tf.random.stateless_normal((2, 4, 4, 64), seed=(5, 6))
    grads = []
    for fn in (channel_dct, lambda t: tf.signal.dct(t, type=2, norm="ortho")):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.tanh(fn(x)) * w)
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


def test_channel_shuffle_is_the_shufflenet_permutation():
    c, g = 48, 16
    x = np.arange(2 * 3 * 3 * c, dtype=np.float32).reshape(2, 3, 3, c)
    y = ChannelShuffle(g)(x).numpy()
    perm = np.arange(c).reshape(g, c // g).T.reshape(-1)
    np.testing.assert_array_equal(y, x[..., perm])
