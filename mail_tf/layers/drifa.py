"""DRIFA-Net's attention modules and block (DRIFA_NET_SPEC §2): MFA (HIFA + CLIA), MIFA (MGIFA +
MLIFA) and the RRA block. Every attention output is a channel vector broadcast over H and W.

The reference's 1x1 convolutions (sigmoid activation) are Dense layers on the channel axis here:
the same weights and arithmetic, and a plain matmul on CPU. Their sigmoids go through
`sigmoid_gate`, so diagnostics can see every gate.
"""

import keras
import tensorflow as tf

from mail_tf.layers.batch_norm import BatchNormalization
from mail_tf.layers.gates import per_channel, sigmoid_gate
from mail_tf.layers.residual import ShortcutBlock
from mail_tf.layers.serialization import register
from mail_tf.layers.checks import check_rank4


def _gap(x):
    return tf.reduce_mean(x, axis=(1, 2))


def _gmp(x):
    return tf.reduce_max(x, axis=(1, 2))


def _pointwise(units, name):
    """A 1x1 convolution on channels; its sigmoid is applied by `_gate`."""
    return keras.layers.Dense(units, name=name)


def _gate(layer, dense, x):
    return sigmoid_gate(layer, dense(x), dense.name)


@register
class MFA(keras.layers.Layer):
    """Multi-branch fusion attention (§2.2): Y = X * sigmoid(gamma*a_H + lambda*a_C) * alpha.

    HIFA: G1 = s(a(X)), G2 = s(b(G1)), G3 = s(c(G1 + G2)), G4 = s(d(G3));
          a_H = s(Dense([GAP(G1) + GMP(G2) || GAP(G3) + GMP(G4)])).
    CLIA: l1 = GAP(s(e(X))), a_C = l1 + s(f(l1)).
    8u^2 + 9u + 1 parameters for u = C channels.
    """

    def build(self, input_shape):
        c = check_rank4(self, input_shape)
        self.convs = [_pointwise(c, f"conv_{k}") for k in "abcdef"]
        for conv in self.convs:
            conv.build((None, c))
        self.fuse = _pointwise(c, "hifa_dense")
        self.fuse.build((None, 2 * c))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")
        self.lam = self.add_weight(name="lambda", shape=(c,), initializer="ones")
        self.alpha = self.add_weight(name="alpha", shape=(c,), initializer="ones")

    def call(self, x):
        a, b, c, d, e, f = self.convs
        g1 = _gate(self, a, x)
        g2 = _gate(self, b, g1)
        g3 = _gate(self, c, g1 + g2)
        g4 = _gate(self, d, g3)
        a_h = _gate(self, self.fuse, tf.concat([_gap(g1) + _gmp(g2), _gap(g3) + _gmp(g4)], axis=-1))
        l1 = _gap(_gate(self, e, x))
        a_c = l1 + _gate(self, f, l1)
        dtype = x.dtype
        attention = sigmoid_gate(self, tf.cast(self.gamma, dtype) * a_h + tf.cast(self.lam, dtype) * a_c)
        return x * per_channel(attention * tf.cast(self.alpha, dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register
class MIFA(keras.layers.Layer):
    """Multimodal information fusion attention (§2.3) over m modalities of equal shape.

    MGIFA: a_G = sum over p in (min, mean, max) of s(Dense(sum_i p(X_i))), one shared Dense.
    MLIFA: M_i = s(conv_i(X_i)); a_L = sum_i [min(M_i) + mean(M_i) + max(M_i)] over H, W.
    One A = s(gamma*a_G + lambda*a_L) for all; Y_i = X_i * A * alpha_i. 3u^2 + 6u + 1 for m = 2.
    """

    def __init__(self, modalities=2, **kwargs):
        super().__init__(**kwargs)
        self.modalities = modalities

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape] if isinstance(input_shape, (list, tuple)) else []
        if len(shapes) != self.modalities or not all(len(s) == 4 for s in shapes):
            raise ValueError(f"{self.name}: expected a list of {self.modalities} (batch, height, width, "
                             f"channels) tensors, got {input_shape}")
        if len({s[1:] for s in shapes}) != 1:
            raise ValueError(f"{self.name}: every modality must have the same (height, width, channels) "
                             f"here; got {[s[1:] for s in shapes]}. Give all modalities the same image size.")
        c = check_rank4(self, shapes[0])
        self.dense = _pointwise(c, "mgifa_dense")
        self.dense.build((None, c))
        self.convs = [_pointwise(c, f"mlifa_conv_{i + 1}") for i in range(self.modalities)]
        for conv in self.convs:
            conv.build((None, c))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")
        self.lam = self.add_weight(name="lambda", shape=(c,), initializer="ones")
        self.alphas = [self.add_weight(name=f"alpha_{i + 1}", shape=(c,), initializer="ones")
                       for i in range(self.modalities)]

    def call(self, xs):
        pooled = [sum(pool(x, axis=(1, 2)) for x in xs)
                  for pool in (tf.reduce_min, tf.reduce_mean, tf.reduce_max)]
        a_g = sum(_gate(self, self.dense, p) for p in pooled)
        a_l = 0.0
        for conv, x in zip(self.convs, xs):
            m = _gate(self, conv, x)
            a_l += tf.reduce_min(m, axis=(1, 2)) + tf.reduce_mean(m, axis=(1, 2)) + tf.reduce_max(m, axis=(1, 2))
        dtype = xs[0].dtype
        attention = sigmoid_gate(self, tf.cast(self.gamma, dtype) * a_g + tf.cast(self.lam, dtype) * a_l)
        return [x * per_channel(attention * tf.cast(alpha, dtype)) for x, alpha in zip(xs, self.alphas)]

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def get_config(self):
        return {**super().get_config(), "modalities": self.modalities}


@register
class RRA(ShortcutBlock):
    """Robust residual attention block (§2.1): a ResNet basic block with an MFA between each 3x3
    conv and its BN: ReLU(BN(MFA(conv(ReLU(BN(MFA(conv_s(x))))))) + shortcut(x)); the shortcut is
    BN(1x1 conv, stride s) when s != 1 or `projection`, else the identity. Convs carry biases."""

    def build(self, input_shape):
        check_rank4(self, input_shape)
        f, s = self.filters, self.strides
        self.conv1 = keras.layers.Conv2D(f, 3, strides=s, padding="same", name="conv1")
        self.mfa1, self.bn1 = MFA(name="mfa1"), BatchNormalization(name="bn1")
        self.conv2 = keras.layers.Conv2D(f, 3, padding="same", name="conv2")
        self.mfa2, self.bn2 = MFA(name="mfa2"), BatchNormalization(name="bn2")
        shape = tuple(input_shape)
        self.conv1.build(shape)
        out = self.conv1.compute_output_shape(shape)
        for layer in (self.mfa1, self.bn1, self.conv2, self.mfa2, self.bn2):
            layer.build(out)
        self._build_shortcut(shape)

    def call(self, x, training=None):
        y = tf.nn.relu(self.bn1(self.mfa1(self.conv1(x)), training=training))
        y = self.bn2(self.mfa2(self.conv2(y)), training=training)
        return tf.nn.relu(y + self._shortcut(x, training))
