"""An exponential moving average of a model's weights, evaluated and kept in place of the raw weights.

With few, short epochs on small data the weights after any one step are noisy, and so is the choice
of the best epoch; the average of the last few hundred steps is not. The average covers the
trainable variables and the BatchNorm moving statistics (the statistics belong to the weights that
made them); random projection kernels and seed states are left alone. The decay warms up as
min(decay, (1 + t) / (10 + t)) at step t, so early epochs are not dominated by the initialisation.
"""

import contextlib

import keras
import tensorflow as tf

from mail_tf.layers.walk import sublayers


def averaged_variables(model):
    """The model variables the average covers: trainable ones and BN moving statistics."""
    stats = [v for layer in sublayers(model, include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)
             for v in (layer.moving_mean, layer.moving_variance)]
    return list(model.trainable_variables) + stats


class WeightAverage:
    """Shadow copies of `averaged_variables(model)`; create under the strategy's scope."""

    def __init__(self, model, decay):
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay={decay!r}: expected a number in (0, 1)")
        self.decay = decay
        self.targets = averaged_variables(model)
        # A numpy copy: initialised from `v.value`, the shadow aliased the model's own variable.
        self.variables = [keras.Variable(v.numpy(), trainable=False, name="average_" + v.path.replace("/", "_"))
                          for v in self.targets]

    def update(self, step):
        """Move the average towards the current weights; `step`: optimiser steps taken so far.
        Call in cross-replica context (the variables are mirrored and in sync)."""
        step = tf.cast(step, tf.float32)
        decay = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + step) / (10.0 + step))
        for shadow, v in zip(self.variables, self.targets):
            shadow.assign(decay * shadow.value + (1.0 - decay) * v.value)

    def swap(self):
        """Exchange the model's weights and the average (eager; swapping twice restores both)."""
        for shadow, v in zip(self.variables, self.targets):
            current = v.numpy()
            v.assign(shadow.numpy())
            shadow.assign(current)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own weights after it."""
        self.swap()
        try:
            yield
        finally:
            self.swap()
