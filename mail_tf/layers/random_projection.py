"""Random projection filters (RPF; Dong & Xu, CVPR 2023) for MSGDC's convolutions (MAIL_SPEC §3).

A fraction of a convolution's filters are fixed random Gaussian kernels N(0, (1/k)^2) for kernel
size k; the rest are trainable and, as in the RPF code, weight-standardised in every forward pass:
w / (std(w) per output filter + 1e-5) / k, so both populations have the same scale 1/k. Without
that, 1/k random filters beside Glorot-initialised trainable ones are ~5x larger (trainable RMS
0.19 / 0.07 / 0.04 against 1.05 / 0.31 / 0.19 for 1x1 / 3x3 / 5x5), and inside MSGDC the next
grouped 1x1 conv mixes them before any BN, so each new draw swamps the learned signal.
`rpf_std_scale` multiplies the common std (default 1: the spec's 1/k); `rpf_standardize=False` is the
earlier unstandardised form. The random kernels live in a non-trainable variable and change only
when `redraw()` is called: Algorithm 2 holds one draw for the k steps of an attack (phase [A]) and
draws again for the update and for inference ([I]). Draws come from the layer's own
`keras.random.SeedGenerator`, so a seed (or `keras.utils.set_random_seed` before building)
reproduces them, and its state is saved with the model's variables.

`defense_decay` is rho of Eq. 17 as the RPF code applies it: decoupled decay of the trainable kernels
(w <- w - lr * rho * w after each step, what SGD's `weight_decay` does), applied by the training step
(`mail_tf.training.decay`), not an L2 term through Adam. On standardised kernels it only raises their
effective learning rate.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from mail_tf.layers.checks import check_groups, check_non_negative, check_positive
from mail_tf.layers.conv import GroupedPointwiseConv2D, depthwise_initializer
from mail_tf.layers.depthwise import depthwise_conv2d
from mail_tf.layers.serialization import register, saved_before
from mail_tf.layers.walk import sublayers

# The leaves' names before they took Defense's (mail_tf.layers.defense).
OLD_NAMES = {"random_ratio": "rpf_ratio", "weight_decay": "defense_decay", "std_scale": "rpf_std_scale",
             "standardize": "rpf_standardize"}


def _check_ratio(layer, ratio):
    if not 0 < ratio <= 1:
        raise ValueError(f"{layer.name}: rpf_ratio must be in (0, 1], got {ratio!r}")


def random_count(total, ratio):
    """How many of `total` filters (or channels) are random: round(ratio * total), at least 1."""
    return min(total, max(1, int(round(ratio * total))))


def random_positions(total, count):
    """`count` of `total` positions spread evenly (e.g. one per group of a grouped conv)."""
    return sorted({int((k + 0.5) * total / count) for k in range(count)})


def assembly_order(total, count):
    """Indices into concat([trainable, random]) that put the random ones at `random_positions`."""
    random = set(random_positions(total, count))
    trained_rank, random_rank, order = 0, 0, []
    for j in range(total):
        if j in random:
            order.append(total - count + random_rank)
            random_rank += 1
        else:
            order.append(trained_rank)
            trained_rank += 1
    return np.array(order, dtype=np.int32)


class _RandomFilters:
    """Shared state of an RPF layer: the seed generator, the random kernel and `redraw`."""

    def _init_random(self, rpf_ratio, defense_decay, seed, rpf_std_scale, rpf_standardize):
        _check_ratio(self, rpf_ratio)
        check_positive(self, "rpf_std_scale", rpf_std_scale)
        check_non_negative(self, "defense_decay", defense_decay)
        self.rpf_ratio = rpf_ratio
        self.rpf_std_scale = rpf_std_scale
        self.rpf_standardize = bool(rpf_standardize)
        self.defense_decay = defense_decay
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="rpf_seed")

    def _add_random_kernel(self, shape, kernel_size):
        self.random_std = self.rpf_std_scale / kernel_size     # of the random filters, and of the standardised ones
        self.random_kernel = self.add_weight(name="random_kernel", shape=shape, initializer="zeros",
                                             trainable=False)
        self.redraw()

    def trainable_kernel(self):
        """The trainable filters as applied: with `rpf_standardize`, each filter (an index of the layer's
        `filter_axis`) rescaled to std `random_std` over its own weights; else the raw variable."""
        if not self.rpf_standardize:
            return self.kernel
        rank = len(self.kernel.shape)
        axes = [a for a in range(rank) if a != self.filter_axis % rank]
        if math.prod(self.kernel.shape[a] for a in axes) == 1:
            scale = tf.abs(self.kernel)   # one weight per filter (a 1x1 conv, one input per group): no std
        else:
            scale = tf.math.reduce_std(self.kernel, axis=axes, keepdims=True)
        return self.kernel / (scale + 1e-5) * self.random_std

    def decayed_weights(self):
        """[(variable, rate)] for the training step's decoupled decay (rho on the trainable kernel)."""
        return [(self.kernel, self.defense_decay)] if self.defense_decay else []

    def redraw(self):
        """Draw new random kernels (one Algorithm 2 phase); they stay fixed until the next call."""
        self.random_kernel.assign(keras.random.normal(
            self.random_kernel.shape, stddev=self.random_std, seed=self.seed_generator,
            dtype=self.random_kernel.dtype))

    def _random_config(self):
        return {"rpf_ratio": self.rpf_ratio, "defense_decay": self.defense_decay, "seed": self.seed,
                "rpf_std_scale": self.rpf_std_scale, "rpf_standardize": self.rpf_standardize}


@register
@saved_before(renamed=OLD_NAMES, rpf_standardize=False)
class RandomProjectionPointwiseConv2D(_RandomFilters, GroupedPointwiseConv2D):
    """Grouped 1x1 convolution with round(ratio * filters) random filters (std 1/k = 1) and the rest
    trainable, standardised per output filter to the same std.

    The random filters sit at evenly spread output positions, so they fall into every group (or
    every other group, and so on, when there are fewer of them than groups).
    """

    filter_axis = -1   # the kernel is (1, 1, C_in / groups, filters)

    def __init__(self, filters, groups=1, rpf_ratio=0.25, defense_decay=0.0, seed=None, rpf_std_scale=1.0,
                 rpf_standardize=True, **kwargs):
        super().__init__(filters, groups=groups, **kwargs)
        self._init_random(rpf_ratio, defense_decay, seed, rpf_std_scale, rpf_standardize)
        self.random_filters = random_count(filters, rpf_ratio)
        self._order = assembly_order(filters, self.random_filters)

    def build(self, input_shape):
        cin = check_groups(self, input_shape, self.groups)
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, cin, self.filters - self.random_filters),
            initializer=self.kernel_initializer)
        self._add_random_kernel((1, 1, cin, self.random_filters), kernel_size=1)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
                     if self.use_bias else None)

    def compact_kernel(self):
        return tf.gather(tf.concat([self.trainable_kernel(), self.random_kernel], axis=-1), self._order, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.pop("kernel_regularizer")
        return {**config, **self._random_config()}


@register
@saved_before(renamed=OLD_NAMES, rpf_standardize=False, depthwise_init="keras")
class RandomProjectionDepthwiseConv2D(_RandomFilters, keras.layers.Layer):
    """Depthwise k x k convolution ('same' padding) in which round(ratio * C) evenly spread input
    channels use random kernels with std 1/k and the others trainable kernels standardised per
    channel to the same std; the bias stays trainable for every channel. The trainable kernels
    start as `depthwise_init` says (`mail_tf.layers.conv.DEPTHWISE_INITS`)."""

    filter_axis = 2    # the kernel is (k, k, C, 1): channel c's filter is [:, :, c, 0]

    def __init__(self, kernel_size, strides=1, use_bias=True, rpf_ratio=0.25, defense_decay=0.0,
                 seed=None, rpf_std_scale=1.0, depthwise_init="fan_in", rpf_standardize=True, **kwargs):
        super().__init__(**kwargs)
        self._init_random(rpf_ratio, defense_decay, seed, rpf_std_scale, rpf_standardize)
        self.kernel_size = kernel_size
        self.strides = strides
        self.use_bias = use_bias
        self.depthwise_init = depthwise_init
        self._initializer = depthwise_initializer(depthwise_init, kernel_size)

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) != 4 or channels is None:
            raise ValueError(f"{self.name}: expected a (batch, height, width, channels) input with known "
                             f"channels, got shape {tuple(input_shape)}")
        k = self.kernel_size
        self.random_channels = random_count(channels, self.rpf_ratio)
        self._order = assembly_order(channels, self.random_channels)
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels - self.random_channels, 1),
                                      initializer=self._initializer)
        self._add_random_kernel((k, k, self.random_channels, 1), kernel_size=k)
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros") if self.use_bias else None

    def call(self, x, training=None):
        kernel = tf.cast(self.full_kernel(), x.dtype)
        y = depthwise_conv2d(x, kernel, self.strides, bool(training))
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, x.dtype))
        return y

    def full_kernel(self):
        """The (k, k, C, 1) depthwise kernel this layer applies."""
        return tf.gather(tf.concat([self.trainable_kernel(), self.random_kernel], axis=2), self._order, axis=2)

    def flops(self, input_shape):
        b, h, w, c = input_shape
        return 2 * b * -(-h // self.strides) * -(-w // self.strides) * c * self.kernel_size ** 2

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.strides
        return (b, None if h is None else -(-h // s), None if w is None else -(-w // s), c)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "use_bias": self.use_bias, "depthwise_init": self.depthwise_init, **self._random_config()}


def random_projection_layers(model):
    """Every RPF layer inside `model` (nested layers included)."""
    return [l for l in sublayers(model) if isinstance(l, _RandomFilters)]


def redraw_random_filters(model):
    """Draw new random filters in every RPF layer of `model` (no-op for a model without any).

    Works eagerly and inside a `tf.function`, where the draws run in program order.
    """
    for layer in random_projection_layers(model):
        layer.redraw()

