"""Batch normalisation as one fused kernel: Keras's `BatchNormalization`, same weights and numbers.

Keras 3 composes batch norm from ~20 small ops per layer in training (moments, the normalisation,
the moving-average updates, and their gradients); MAIL-RN18 has 160 such layers, and on a 2-core
CPU the per-op cost of those ops was a fifth of its train step (docs/PERFORMANCE.md).
`tf.raw_ops.FusedBatchNormV3` does the forward pass in one op and its gradient in one more, and at
inference it is the form TensorFlow's graph optimiser folds into the preceding convolution.

The layer is a subclass, so weights, configs and `isinstance(..., keras.layers.BatchNormalization)`
are unchanged; whatever the fused kernel does not cover (masks, renorm, synchronised statistics
across replicas, other axes or ranks, float16 inputs) goes through Keras's own `call`.
tests/test_fast_paths.py checks outputs, gradients and moving statistics against Keras's layer.

At inference a batch norm is an affine map per channel, and `conv_bn` folds it into the kernel and
bias of the conv in front of it. TensorFlow's graph optimiser does that by itself only for a conv
without a bias (the plain ResNet's); MAIL's convs have biases, so their batch norms were a pass
over every map of their own (docs/PERFORMANCE.md).
"""

import math

import keras
import tensorflow as tf

from mail_tf.layers.serialization import register


def _biased(inputs):
    """(n - 1) / n for the n = B * H * W values per channel: a constant where the shape is static,
    so the update costs no shape, cast and divide kernels per layer and step."""
    if None not in inputs.shape[:3]:
        n = inputs.shape[0] * inputs.shape[1] * inputs.shape[2]
        return (n - 1.0) / max(n, 1.0)
    shape = tf.shape(inputs)
    n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
    return (n - 1.0) / tf.maximum(n, 1.0)


@register
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the last axis of (B, H, W, C) float32 maps, fused."""

    def _fused(self, inputs, mask):
        return (mask is None and len(inputs.shape) == 4 and self.axis in (-1, 3) and not self.renorm
                and not self.synchronized and inputs.dtype == tf.float32 and inputs.shape[-1] is not None
                and self.epsilon >= 1.001e-5)   # the kernel's smallest epsilon

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        c = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((c,))
        beta = self.beta if self.center else tf.zeros((c,))
        if training and self.trainable:
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.zeros((0,)), variance=tf.zeros((0,)),
                epsilon=self.epsilon, is_training=True)
            # The kernel returns the unbiased (n - 1) variance for the running estimate; Keras's
            # moving variance averages the biased one it normalises with.
            variance = variance * _biased(inputs)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
            return y
        y, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, is_training=False)
        return y

    def foldable(self, training, dtype):
        """Whether this layer, at this `training` and input dtype, is the affine map of its moving
        statistics (Keras's, where `fold` gives it), so a conv in front of it can take it in."""
        return (not (training and self.trainable) and self.axis in (-1, 3) and not self.renorm
                and tf.as_dtype(dtype) == tf.float32)

    def fold(self, kernel, bias):
        """(kernel', bias') with conv(x, kernel') + bias' == this layer's inference output on
        conv(x, kernel) + bias; the kernel's last axis holds the output channels, `bias` may be None."""
        scale = tf.math.rsqrt(self.moving_variance + self.epsilon)
        if self.scale:
            scale *= self.gamma
        shift = -self.moving_mean * scale if bias is None else (bias - self.moving_mean) * scale
        if self.center:
            shift += self.beta
        return kernel * scale, shift


def conv_bn(conv, bn, x, training=None):
    """bn(conv(x)); at inference the batch norm folded into the conv's kernel and bias where the map has
    at least as many pixels as the kernel has weights per output channel (on smaller maps, such as
    stage 4's 1x1 at 32 px, scaling the kernel costs more than the pass over the map). `conv` is one of
    `mail_tf.layers`' convs (`compact_kernel`, `convolve`); an export (`as_conv`) keeps its batch norms."""
    b, h, w, _ = conv.compute_output_shape(x.shape)
    # Weights per output channel: the product of every kernel axis but the last.
    if (conv.as_conv or not bn.foldable(training, x.dtype) or None in (h, w)
            or (b or 1) * h * w < math.prod(conv.kernel.shape[:-1])):
        return bn(conv(x, training=training), training=training)
    with tf.name_scope(conv.name):
        kernel, bias = bn.fold(conv.compact_kernel(), conv.bias if conv.use_bias else None)
        return conv.convolve(x, kernel, bias)
