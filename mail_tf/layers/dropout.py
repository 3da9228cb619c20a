"""Dropout that can stay on at inference, for Monte-Carlo estimates."""

import keras

from mail_tf.layers.serialization import register


@register
class MCDropout(keras.layers.Dropout):
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
