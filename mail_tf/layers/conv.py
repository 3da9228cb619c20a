"""Convolution primitives: a CPU-fast grouped 1x1 convolution and the channel shuffle.

`GroupedPointwiseConv2D` stores the compact grouped kernel (same layout as `Conv2D(groups=G).kernel`, so
weights transfer both ways) and runs as one grouped `tf.nn.conv2d` wherever TensorFlow has that op's
gradients: oneDNN's CPU kernels (TensorFlow's default on x86) and cuDNN do, TensorFlow's own CPU kernels
do not (`grouped_conv_differentiable` asks once per dtype). On MAIL-RN18's shapes oneDNN's grouped conv
is 1.3-7x faster, forward and backward, than a matmul with the block-diagonal kernel, which computes the
zero blocks too (docs/PERFORMANCE.md). Where it has no gradients (oneDNN off, float16 on CPU) the layer
multiplies by that block-diagonal expansion instead. On small maps with few groups
(`SMALL_MAP_PIXELS`, `MATMUL_GROUPS`) one matmul per group beats both, forward and backward. Keras's
own `Conv2D(groups > 1)` runs on CPU through an XLA-compiled path 30-100x slower (see ANCHORS.md).
`tests/test_fast_paths.py` proves every path equal to `Conv2D(groups=G)`.
A channel shuffle in front of the conv (EMILA's; `input_shuffle`, set by the owner at build, read at
trace) is a transpose of the activations before a grouped conv; it is folded into the rows of the
block-diagonal kernel, and into the per-group matmuls' view of the channels where its runs line up
with the groups, so there the activations are never transposed.
For on-device export (`mail_tf.lite`) `as_conv = True` makes every path a convolution: one LiteRT
CONV_2D op (which takes groups), without the zero blocks and without one op per group (the graph of a
matmul per group made a third of MAIL's int8 file).
`Conv2D` is Keras's with the same weights and config; a dense 1x1 stride-1 conv runs as one matmul over
the pixels, which oneDNN does 1.1-1.8x faster than its 1x1 convolution, forward and backward, on
MAIL-RN18's shapes (docs/PERFORMANCE.md). `as_conv` gives the export its plain CONV_2D back.
"""

import functools
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mail_tf.layers.checks import check_groups
from mail_tf.layers.serialization import register


# How depth-wise kernels start (docs/TRAINABILITY.md). A depth-wise k x k filter reads k*k inputs,
# but Keras's glorot_uniform counts C_in*k*k for a (k, k, C_in, 1) kernel, so its std is ~sqrt(C_in)
# too small: 0.06 for a 3x3 at 64 channels, 0.02 at 512, and MSGDC's spatial branches start at 6-17 %
# of the scale of its 1x1 branch. "fan_in": uniform with std 1/k (variance 1/fan-in; the std the
# random projection filters use too). "keras": glorot_uniform, as the notebooks.
DEPTHWISE_INITS = ("fan_in", "keras")


def depthwise_initializer(kind, kernel_size):
    """The initializer of a k x k depth-wise kernel for `kind` in DEPTHWISE_INITS."""
    if kind not in DEPTHWISE_INITS:
        raise ValueError(f"depthwise_init must be one of {DEPTHWISE_INITS}, got {kind!r}")
    if kind == "keras":
        return keras.initializers.GlorotUniform()
    limit = math.sqrt(3.0) / kernel_size
    return keras.initializers.RandomUniform(-limit, limit)


def block_diagonal(kernel, groups):
    """Expand a grouped 1x1 kernel (1, 1, Cin/G, Cout) into its dense (Cin, Cout) equivalent.

    Group g maps input channels [g*Cin/G, (g+1)*Cin/G) to output channels [g*Cout/G, (g+1)*Cout/G),
    exactly as `Conv2D(groups=G)` does.
    """
    cin_g, cout = kernel.shape[-2], kernel.shape[-1]
    k = tf.reshape(kernel, (1, cin_g, groups, cout // groups))
    # (G, Cin/G, G, Cout/G) with zero off-diagonal blocks: a broadcast product with the identity, not
    # an einsum, which the LiteRT converter mis-lowers to a BatchMatMul and cannot convert.
    eye = tf.eye(groups, dtype=k.dtype)
    k = k * eye[:, None, :, None]
    return tf.reshape(k, (groups * cin_g, cout))


@functools.cache
def _grouped_conv_differentiable(dtype_name):
    # Run now, also when called while a graph is traced. init_scope pauses gradient tapes, so the
    # probe's graph takes its gradients with tf.gradients.
    with tf.init_scope():
        @tf.function
        def probe(x, k):
            return tf.gradients(tf.nn.conv2d(x, k, 1, "VALID"), [x, k])

        try:
            probe(tf.ones((1, 1, 1, 2), dtype_name), tf.ones((1, 1, 1, 2), dtype_name))
            return True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
            return False


def grouped_conv_differentiable(dtype):
    """Whether a grouped `tf.nn.conv2d` of this dtype has gradients on the default device (asked once
    per process and dtype: a two-channel, two-group conv and its gradient are run)."""
    return _grouped_conv_differentiable(tf.as_dtype(dtype).name)


# On small maps oneDNN's grouped 1x1 conv is slower than one matmul per group, forward and in both
# gradients: MAIL's 2-group fuse conv (3C -> C) at 1x1x512 took 2.2 ms forward and 7.1 ms with its
# gradients against 1.0 and 2.9 ms. Alone, 4x4 and 8x8 maps were a toss-up within this VM's noise;
# the whole model was 1.07x faster in training at 32 px with this bound (4 or 16 pixels: the same)
# and even at 128 px (docs/PERFORMANCE.md).
SMALL_MAP_PIXELS = 64
MATMUL_GROUPS = 4   # at most this many groups (one matmul each) take that path


def _matmul_per_group(x, strides, groups):
    """Whether a grouped 1x1 conv of `x` runs as one matmul per group (see SMALL_MAP_PIXELS)."""
    h, w = x.shape[1], x.shape[2]
    return (strides == 1 and 1 < groups <= MATMUL_GROUPS and h is not None and w is not None
            and h * w <= SMALL_MAP_PIXELS)


def _grouped_matmul(x, kernel, bias, groups, shuffle=None):
    """The grouped 1x1 stride-1 conv of (B, H, W, Cin) maps with a (1, 1, Cin/G, Cout) kernel as one
    matmul per group over all pixels, each with its part of `bias` (grappler fuses the pair).

    A channel shuffle in front (`shuffle` groups S) is folded in where its runs line up with the
    conv's groups ((Cin/S) % G == 0): group g then reads x viewed as (.., S, G, Cin/(S*G)) at [.., g, :],
    in (s, a) order where the shuffled order is (a, s), which is a permutation of its kernel's rows.
    """
    cin, cout = x.shape[-1], kernel.shape[-1]
    cin_g, cout_g = cin // groups, cout // groups
    shape = tf.shape(x)
    ks = tf.unstack(tf.reshape(tf.cast(kernel, x.dtype), (cin_g, groups, cout_g)), axis=1)
    if shuffle and (cin // shuffle) % groups == 0:
        run = cin // (shuffle * groups)
        xs = [tf.reshape(v, (-1, cin_g)) for v in tf.unstack(tf.reshape(x, (-1, shuffle, groups, run)), axis=2)]
        ks = [tf.reshape(tf.transpose(tf.reshape(k, (run, shuffle, cout_g)), (1, 0, 2)), (cin_g, cout_g)) for k in ks]
    else:
        if shuffle:
            x = channel_shuffle(x, shuffle)
        xs = tf.unstack(tf.reshape(x, (-1, groups, cin_g)), axis=1)   # one kernel, not G slices
    bs = [None] * groups if bias is None else tf.split(tf.cast(bias, x.dtype), groups)
    ys = [tf.matmul(a, k) if b is None else tf.nn.bias_add(tf.matmul(a, k), b) for a, k, b in zip(xs, ks, bs)]
    return tf.reshape(tf.concat(ys, axis=-1), tf.concat([shape[:3], [cout]], 0))


def shuffle_permutation(channels, groups):
    """The ShuffleNet channel order: channel_shuffle(x, groups) == x[..., shuffle_permutation(C, groups)]."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle of (B, H, W, C) maps: (.., G, C/G) -> (.., C/G, G) over the channels."""
    c = x.shape[-1]
    shape = ops.shape(x)
    y = ops.reshape(x, (shape[0], shape[1], shape[2], groups, c // groups))
    y = ops.transpose(y, (0, 1, 2, 4, 3))
    return ops.reshape(y, (shape[0], shape[1], shape[2], c))


def pixel_matmul(x, kernel, bias=None):
    """A 1x1 conv of (B, H, W, Cin) maps with a (Cin, Cout) kernel as one 2-D matmul over all pixels
    (a 4-D matmul would batch H*B small products instead), plus `bias` if given."""
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), tf.cast(kernel, x.dtype))
    if bias is not None:
        y = tf.nn.bias_add(y, tf.cast(bias, x.dtype))
    return tf.reshape(y, tf.concat([shape[:3], [kernel.shape[-1]]], 0))


@register
class GroupedPointwiseConv2D(keras.layers.Layer):
    """1x1 convolution with `groups` channel groups; exact equal of `Conv2D(filters, 1, groups=...)`."""

    def __init__(self, filters, groups=1, strides=1, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if filters % groups:
            raise ValueError(f"{self.name}: filters={filters} is not divisible by groups={groups}")
        self.filters = filters
        self.groups = groups
        self.strides = strides
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.as_conv = False    # read when a graph is traced: see the module docstring
        # None, or the groups of a channel shuffle this conv applies after: conv(channel_shuffle(x, g)).
        self.input_shuffle = None

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, check_groups(self, input_shape, self.groups), self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
                     if self.use_bias else None)

    def compact_kernel(self):
        """The grouped kernel (1, 1, Cin/G, Cout) this layer applies."""
        return self.kernel

    def call(self, x):
        return self.convolve(x, self.compact_kernel(), self.bias if self.use_bias else None)

    def convolve(self, x, kernel, bias):
        """This conv of `x` with a grouped `kernel` (1, 1, Cin/G, Cout) and `bias` (or None) in its place
        (a batch norm folded into them: `mail_tf.layers.batch_norm.conv_bn`)."""
        if not self.as_conv and _matmul_per_group(x, self.strides, self.groups):
            return _grouped_matmul(x, kernel, bias, self.groups, self.input_shuffle)
        if self.groups > 1 and (self.as_conv or grouped_conv_differentiable(x.dtype)):
            if self.input_shuffle:
                x = channel_shuffle(x, self.input_shuffle)
            y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), self.strides, "VALID")
        else:
            if self.strides > 1:
                # A 1x1 kernel with stride s reads pixel (s*i, s*j) under 'same' and 'valid' padding alike.
                x = x[:, ::self.strides, ::self.strides, :]
            kernel = (block_diagonal(kernel, self.groups) if self.groups > 1
                      else tf.reshape(kernel, kernel.shape[-2:]))
            if self.input_shuffle:
                # shuffle(x) @ K == x @ K' with K'[order[j]] = K[j]: K' = K[inverse(order)].
                order = shuffle_permutation(x.shape[-1], self.input_shuffle)
                kernel = tf.gather(kernel, np.argsort(order), axis=0)
            if not self.as_conv:
                return pixel_matmul(x, kernel, bias)
            y = tf.nn.conv2d(x, tf.cast(kernel[None, None], x.dtype), 1, "VALID")
        return y if bias is None else tf.nn.bias_add(y, tf.cast(bias, x.dtype))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        h = None if h is None else -(-h // s)
        w = None if w is None else -(-w // s)
        return (b, h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups,
                "strides": self.strides, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}


@register
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`; a 1x1, stride-1, ungrouped, channels-last conv of (B, H, W, C) runs as a
    matmul over the pixels (see the module doc), any other as Keras's own call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.as_conv = False    # read when a graph is traced, as `GroupedPointwiseConv2D.as_conv`

    def _as_matmul(self, inputs):
        return (not self.as_conv and len(inputs.shape) == 4 and tuple(self.kernel_size) == (1, 1)
                and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
                and self.groups == 1 and self.data_format == "channels_last")

    def compact_kernel(self):
        """The kernel this layer applies (as `GroupedPointwiseConv2D.compact_kernel`)."""
        return self.kernel

    def call(self, inputs):
        return self.convolve(inputs, self.kernel, self.bias if self.use_bias else None)

    def convolve(self, inputs, kernel, bias):
        """This conv of `inputs` with `kernel` and `bias` (or None) in place of its own (a batch norm
        folded into them: `mail_tf.layers.batch_norm.conv_bn`); Keras's call, or the matmul."""
        if self._as_matmul(inputs):
            y = pixel_matmul(inputs, tf.reshape(kernel, kernel.shape[2:]), bias)
        else:
            y = self.convolution_op(inputs, kernel)
            if bias is not None:
                channels_last = self.data_format == "channels_last"
                shape = (1,) * (self.rank + 1) + (self.filters,) if channels_last else (1, self.filters) + (1,) * self.rank
                y = ops.add(y, ops.reshape(bias, shape))
        return y if self.activation is None else self.activation(y)


@register
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle: (.., G, C/G) -> (.., C/G, G) over the channel axis."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(f"{self.name}: channels ({input_shape[-1]}) must be divisible by "
                             f"groups={self.groups}; input shape {tuple(input_shape)}")

    def permutation(self, channels):
        """The channel order of the output: shuffle(x) == x[..., permutation(C)]."""
        return shuffle_permutation(channels, self.groups)

    def call(self, x):
        return channel_shuffle(x, self.groups)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
