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
"""

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
