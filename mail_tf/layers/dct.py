"""Orthonormal DCT-II along the channel axis, as a matmul with a constant matrix.

`tf.signal.dct(x, norm="ortho")` computes the same transform through an FFT; on CPU the matmul with
the constant (C, C) DCT-II matrix is about 3x faster (ANCHORS.md) and has a plain matmul gradient.
`tests/test_fast_paths.py` proves the two equal, forward and gradient, and both equal to
`scipy.fft.dct(..., norm="ortho")`.
"""

import functools

import numpy as np
import tensorflow as tf


@functools.lru_cache(maxsize=None)
def dct_matrix(n):
    """The orthonormal DCT-II matrix M (n, n): dct(x) = M @ x for a length-n vector x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def channel_dct(x):
    """Orthonormal DCT-II of `x` over its last (channel) axis."""
    n = x.shape[-1]
    if n is None:
        raise ValueError("channel_dct needs a known channel count; got shape "
                         f"{tuple(x.shape)}")
    m = tf.constant(dct_matrix(n).T, dtype=x.dtype)
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, (-1, n)), m)
    return tf.reshape(y, shape)
