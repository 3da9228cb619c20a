"""A CPU-fast 'same' depth-wise convolution: the function and a drop-in `DepthwiseConv2D`.

Two things make MSGDC's depth-wise convs slow on CPU (docs/PERFORMANCE.md):
- oneDNN's filter gradient is fast for 3x3 kernels but 1.1-2.3x slower than it needs to be for 5x5
  (`DepthwiseConv2dNativeBackpropFilter`, 18-31 % of MAIL-RN18's train-step kernel time), and
  1.5x slower for 5x5 at stride 2. For a kernel of more than 3x3 taps the filter gradient here is
  itself a depth-wise conv: dK[i, j, c] = sum_{b,h,w} x_pad[b, s*h+i, s*w+j, c] * dy[b, h, w, c] is a
  'valid' conv of x_pad with dy as the filter dilated by the stride s, batch folded into channels.
- Late stages run 5x5 and 3x3 kernels on 2x2 and 1x1 maps, where most taps only ever read the
  zero padding. At stride 1 a tap more than H-1 rows (W-1 columns) off centre never meets the map,
  so the kernel is cropped to its central min(k, 2H-1) x min(k, 2W-1) taps; on a 1x1 map the conv is
  a per-channel product. Exact: the cropped taps multiply zeros, and their gradient is zero.
`tests/test_fast_paths.py` checks outputs and both gradients against `tf.nn.depthwise_conv2d`.
"""

import keras
import tensorflow as tf

from mail_tf.layers.serialization import register


def _same_pads(size, k, s):
    """(before, after) padding of TensorFlow's 'SAME' along one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _filter_gradient(x, dy, kh, kw, s):
    """dK of a stride-s 'same' depth-wise conv, as a depth-wise conv of x with dy (see the module doc);
    at stride s the taps of dy are s pixels apart in x, so dy is a filter dilated by s."""
    b, h, w, c = x.shape
    (top, bottom), (left, right) = _same_pads(h, kh, s), _same_pads(w, kw, s)
    xp = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    xp = tf.reshape(tf.transpose(xp, (1, 2, 0, 3)), (1, h + top + bottom, w + left + right, b * c))
    f = tf.reshape(tf.transpose(dy, (1, 2, 0, 3)), (dy.shape[1], dy.shape[2], b * c, 1))
    dk = tf.nn.depthwise_conv2d(xp, f, (1, 1, 1, 1), "VALID", dilations=(s, s))   # (1, >= kh, >= kw, B*C)
    dk = dk[:, :kh, :kw]       # more only where 'same' pads nothing: rows no tap reads
    return tf.reshape(tf.reduce_sum(tf.reshape(dk, (kh, kw, b, c)), axis=2), (kh, kw, c, 1))


def _depthwise_large_kernel(x, kernel, s):
    """'same' depth-wise conv of a static-shape x at stride s whose filter gradient is `_filter_gradient`."""
    strides = (1, s, s, 1)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.nn.depthwise_conv2d_backprop_input(x.shape, kernel, dy, strides, "SAME")
            return dx, _filter_gradient(x, dy, kernel.shape[0], kernel.shape[1], s)

        return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME"), grad

    return conv(x, kernel)


def depthwise_conv2d(x, kernel, strides=1, filter_gradient=True):
    """`tf.nn.depthwise_conv2d(x, kernel, (1, s, s, 1), "SAME")` for a (kh, kw, C, 1) kernel, faster
    on CPU where the shapes allow (see the module doc); any other case is that call itself.
    filter_gradient=False where no kernel gradient is taken (prediction, attacks): TensorFlow's own
    gradient then, and grappler may fuse the conv with what follows, which it cannot across ours."""
    kh, kw = kernel.shape[0], kernel.shape[1]
    b, h, w, _ = x.shape
    if h is None or w is None or kh % 2 == 0 or kw % 2 == 0 or kernel.shape[3] != 1:
        return tf.nn.depthwise_conv2d(x, kernel, (1, strides, strides, 1), "SAME")
    if strides == 1:
        ch, cw = min(kh, 2 * h - 1), min(kw, 2 * w - 1)
        if (ch, cw) != (kh, kw):
            kernel = kernel[(kh - ch) // 2:(kh + ch) // 2, (kw - cw) // 2:(kw + cw) // 2]
            kh, kw = ch, cw
        if kh == kw == 1:
            return x * tf.reshape(kernel, (-1,))
    if filter_gradient and kh * kw > 9 and b is not None:
        return _depthwise_large_kernel(x, kernel, strides)
    return tf.nn.depthwise_conv2d(x, kernel, (1, strides, strides, 1), "SAME")


@register
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with the same weights and config, run through
    `depthwise_conv2d` when its settings are that function's ('same', channels_last, multiplier 1,
    no dilation, equal strides), with its filter gradient in training; otherwise Keras's own call."""

    def call(self, inputs, training=None):
        if (self.padding != "same" or self.data_format != "channels_last" or self.depth_multiplier != 1
                or tuple(self.dilation_rate) != (1, 1) or self.strides[0] != self.strides[1]):
            return super().call(inputs)
        y = depthwise_conv2d(inputs, tf.cast(self.kernel, inputs.dtype), self.strides[0], bool(training))
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, inputs.dtype))
        return y if self.activation is None else self.activation(y)
