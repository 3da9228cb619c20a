"""Dropout whose masks are the same however the batch is split over replicas, and a Monte-Carlo
variant that stays on at inference."""

import keras
import tensorflow as tf

from mail_tf.layers.replica_random import global_batch_draw, split_over_replicas
from mail_tf.layers.serialization import register


@register
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` (identical on one replica) whose mask, under a strategy with several
    replicas, is this replica's rows of the mask one device would draw for the global batch
    (`replica_random`); Keras's own would give example i of every replica the same mask."""

    def call(self, inputs, training=False):
        # Keras's own call wherever it is already right: it keeps one-device numerics bit for bit.
        batch_shared = self.noise_shape is not None and self.noise_shape[0] is not None
        if not (training and self.rate > 0) or split_over_replicas() is None or batch_shared:
            return super().call(inputs, training=training)
        shape = tf.shape(inputs)
        if self.noise_shape is not None:
            shape = tf.stack([shape[i] if d is None else d for i, d in enumerate(self.noise_shape)])
        ones = lambda s: tf.ones(s, inputs.dtype)
        mask = global_batch_draw(lambda s: keras.random.dropout(ones(s), self.rate, seed=self.seed_generator), shape)
        return inputs * mask          # mask is 1 / (1 - rate) or 0: the product one device computes


@register
class MCDropout(Dropout):
    """Dropout active in every call.

    Keras 3's functional models overwrite a `training=True` passed inside the graph with the
    model-level flag, so `predict()` would silently switch a plain Dropout off; forcing the flag in
    `call` survives `predict`, `evaluate` and SavedModel export.
    """

    def __init__(self, rate, **kwargs):
        super().__init__(rate, **kwargs)
        self.active = True    # read when a graph is traced; off only for a deterministic export

    def call(self, inputs, training=None):
        return super().call(inputs, training=True if self.active else training)
