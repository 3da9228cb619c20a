"""A check at a multimodal model's inputs: one image per modality for every sample."""

import keras
import tensorflow as tf

from mail_tf.layers.serialization import register


@register
class SameBatch(keras.layers.Layer):
    """Passes the modalities' batches through unchanged, after checking they are non-empty and of one size.

    Without it a batch of 1 beside a batch of 3 is broadcast through the fusion layers and answered as
    3 samples, and an empty batch fails deep inside a convolution.
    """

    def call(self, inputs):
        batch = tf.shape(inputs[0])[0]
        checks = [tf.debugging.assert_positive(
            batch, message=f"{self.name}: empty batch; expected at least one sample per modality")]
        for i, x in enumerate(inputs[1:], start=1):
            checks.append(tf.debugging.assert_equal(
                tf.shape(x)[0], batch, message=f"{self.name}: modality {i + 1} has a different batch size from "
                                               "modality 1; every modality needs one image per sample"))
        with tf.control_dependencies(checks):
            return [tf.identity(x) for x in inputs]

    def compute_output_shape(self, input_shape):
        return list(input_shape)
