"""The per-modality building blocks of MAIL: MSGDC, channel attention, EMILA, ERLA (MAIL_SPEC §2.1-2.2),
and the plain ResNet basic block used for the ablation and the reference network."""

import keras
import tensorflow as tf

from mail_tf.layers.batch_norm import BatchNormalization, conv_bn
from mail_tf.layers.conv import ChannelShuffle, Conv2D, GroupedPointwiseConv2D, depthwise_initializer
from mail_tf.layers.defense import Defense, with_defense_config
from mail_tf.layers.depthwise import DepthwiseConv2D
from mail_tf.layers.gates import ATTENTION_INITS, check_choice, per_channel, scale_initializer, sigmoid_gate
from mail_tf.layers.noise import AttentionNoise
from mail_tf.layers.random_projection import RandomProjectionDepthwiseConv2D, RandomProjectionPointwiseConv2D
from mail_tf.layers.serialization import register, saved_before
from mail_tf.layers.checks import check_rank4

GPC_GROUPS = 16      # groups of the group point-wise conv in MSGDC (notebook)
SHUFFLE_GROUPS = 16  # channel shuffle groups in EMILA (notebook)
FUSE_GROUPS = 2      # groups of the 1x1 conv that fuses the shuffled MSGDC output (notebook)
CA_POOLS = ("paper", "notebook")


@register
@saved_before(depthwise_init="keras")
@with_defense_config
class MSGDC(keras.layers.Layer):
    """Multi-scale group depth-wise convolution (Eq. 2): [GPC(x), DWC3(x), DWC5(x)] on channels.

    GPC is a grouped 1x1 conv to `filters` channels; the depth-wise convs keep the input channels,
    so the output has `filters + len(kernel_sizes) * C_in` channels.
    The depth-wise kernels start as `depthwise_init` says ("fan_in": std 1/k; "keras": Keras's
    glorot, ~sqrt(C_in) smaller; `mail_tf.layers.conv.DEPTHWISE_INITS`).
    Robust-MAIL (Eq. 20): with `defense.rpf_ratio` > 0 that fraction of the GPC filters and of the
    depth-wise channels are random projection filters; the trainable kernels beside them are
    weight-standardised (`rpf_standardize`) and decayed by `defense_decay`
    (`mail_tf.layers.random_projection`). `defense`: a `Defense` (or its config); MAN is not MSGDC's.
    """

    def __init__(self, filters, strides=1, groups=GPC_GROUPS, kernel_sizes=(3, 5), use_bias=True,
                 depthwise_init="fan_in", defense=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.groups = groups
        self.kernel_sizes = tuple(kernel_sizes)
        self.use_bias = use_bias
        self.depthwise_init = depthwise_init
        self.defense = Defense.of(defense)
        if self.defense.rpf:
            rpf = dict(strides=strides, use_bias=use_bias, **self.defense.rpf)
            self.pointwise = RandomProjectionPointwiseConv2D(filters, groups=groups, name="gpc", **rpf)
            self.depthwise = [RandomProjectionDepthwiseConv2D(k, depthwise_init=depthwise_init, name=f"dwc{k}", **rpf)
                              for k in self.kernel_sizes]
        else:
            self.pointwise = GroupedPointwiseConv2D(filters, groups=groups, strides=strides,
                                                    use_bias=use_bias, name="gpc")
            self.depthwise = [DepthwiseConv2D(
                k, strides=strides, padding="same", use_bias=use_bias,
                depthwise_initializer=depthwise_initializer(depthwise_init, k), name=f"dwc{k}")
                for k in self.kernel_sizes]

    def build(self, input_shape):
        check_rank4(self, input_shape)
        self.pointwise.build(input_shape)
        for dw in self.depthwise:
            dw.build(input_shape)

    def call(self, x):
        return tf.concat([self.pointwise(x)] + [dw(x) for dw in self.depthwise], axis=-1)

    def compute_output_shape(self, input_shape):
        b, h, w, c = self.pointwise.compute_output_shape(input_shape)
        return (b, h, w, c + len(self.kernel_sizes) * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "groups": self.groups, "kernel_sizes": list(self.kernel_sizes), "use_bias": self.use_bias,
                "depthwise_init": self.depthwise_init, "defense": self.defense.get_config()}


@register
@saved_before(pools="notebook", renamed={"defense_decay": "man_decay"})
@with_defense_config
class ChannelAttention(keras.layers.Layer):
    """CA (Eq. 4): y * sigmoid(theta * Dense(C)(ReLU(Dense(C/r)(z)))).

    z = (GMN + GAP + GMP) + (GMP - GAP - GMN) with pools="paper" (Eq. 4's G_p and mu; it equals
    2*GMP, which is how `attention` computes it). pools="notebook" adds the
    notebook's global sum GSP to the first bracket: a sum grows with H*W and saturates most gates at
    64 px and above (docs/TRAINABILITY.md), so it is a compatibility option only.
    attention_init="paper" (default) starts theta at 1; "neutral" at 0, so the map starts at a
    uniform 0.5 with the full sigmoid slope (see `mail_tf.layers.gates`).
    Robust-MAIL (Eq. 21): with `defense.man_sigma` > 0, modulated attention noise is added to the map
    (its delta decayed by `man_decay`); RPF is not CA's.
    """

    def __init__(self, reduction=4, pools="paper", attention_init="paper", defense=None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.pools = check_choice("pools", pools, CA_POOLS)
        self.attention_init = check_choice("attention_init", attention_init, ATTENTION_INITS)
        self.defense = Defense.of(defense)
        self.noise = AttentionNoise(**self.defense.man, name="man") if self.defense.man else None

    def build(self, input_shape):
        check_rank4(self, input_shape)
        c = input_shape[-1]
        if c < self.reduction:
            raise ValueError(f"{self.name}: {c} channels is fewer than the reduction {self.reduction}")
        self.squeeze = keras.layers.Dense(c // self.reduction, activation="relu", name="squeeze")
        self.excite = keras.layers.Dense(c, name="excite")
        self.squeeze.build((None, c))
        self.excite.build((None, c // self.reduction))
        self.theta = self.add_weight(name="theta", shape=(), initializer=scale_initializer(self.attention_init))
        if self.noise is not None:
            self.noise.build((None, 1, 1, c))

    def attention(self, y):
        """The channel attention map A_c, shape (B, 1, 1, C)."""
        # Eq. 4's z = (GMN + GAP + GMP) + (GMP - GAP - GMN) is 2 * GMP: computed so, because the
        # minimum and the mean (and their gradients, which cancel) cost a dozen kernels per layer,
        # several of them the size of y. tests/test_layers.py checks it against the written form.
        gmp = tf.reduce_max(y, axis=(1, 2))
        z = gmp + gmp
        if self.pools == "notebook":
            z += tf.reduce_sum(y, axis=(1, 2))
        a = per_channel(sigmoid_gate(self, self.excite(self.squeeze(z)) * tf.cast(self.theta, y.dtype)))
        return a if self.noise is None else self.noise(a)

    def call(self, y):
        return y * self.attention(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "pools": self.pools,
                "attention_init": self.attention_init, "defense": self.defense.get_config()}


@register
@saved_before(ca_pools="notebook", depthwise_init="keras")
@with_defense_config
class EMILA(keras.layers.Layer):
    """EMILA (Eq. 3, notebook form): ReLU(BN(Conv1x1_s(x)) + CA(BN(Fuse(Shuffle(MSGDC_s(x))))))."""

    def __init__(self, filters, strides=1, ca_pools="paper", attention_init="paper", depthwise_init="fan_in",
                 defense=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.ca_pools, self.attention_init, self.depthwise_init = ca_pools, attention_init, depthwise_init
        self.defense = Defense.of(defense)
        self.msgdc = MSGDC(filters, strides=strides, depthwise_init=depthwise_init, defense=self.defense,
                           name="msgdc")
        self.shuffle = ChannelShuffle(SHUFFLE_GROUPS, name="shuffle")
        self.fuse = GroupedPointwiseConv2D(filters, groups=FUSE_GROUPS, name="fuse")
        self.fuse_bn = BatchNormalization(name="fuse_bn")
        self.ca = ChannelAttention(pools=ca_pools, attention_init=attention_init, defense=self.defense, name="ca")
        self.residual = Conv2D(filters, 1, strides=strides, name="residual")
        self.residual_bn = BatchNormalization(name="residual_bn")

    def build(self, input_shape):
        check_rank4(self, input_shape)
        self.msgdc.build(input_shape)
        mixed = self.msgdc.compute_output_shape(input_shape)
        self.shuffle.build(mixed)
        self.fuse.build(mixed)
        # The fuse conv shuffles its input itself, the fastest way its path allows (`GroupedPointwiseConv2D`).
        self.fuse.input_shuffle = self.shuffle.groups
        out = self.fuse.compute_output_shape(mixed)
        self.fuse_bn.build(out)
        self.ca.build(out)
        self.residual.build(input_shape)
        self.residual_bn.build(out)

    def call(self, x, training=None):
        y = self.ca(conv_bn(self.fuse, self.fuse_bn, self.msgdc(x), training))   # fuse(shuffle(.)): see build
        r = conv_bn(self.residual, self.residual_bn, x, training)
        return tf.nn.relu(r + y)

    def compute_output_shape(self, input_shape):
        return self.msgdc.pointwise.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                **_form_config(self)}


def _form_config(layer):
    """The block's form: the channel attention's pools, how its gates and depth-wise kernels start,
    and its defenses (`Defense`: none is plain MAIL)."""
    return {"ca_pools": layer.ca_pools, "attention_init": layer.attention_init,
            "depthwise_init": layer.depthwise_init, "defense": layer.defense.get_config()}


class ShortcutBlock(keras.layers.Layer):
    """A residual block's shortcut as MAIL_SPEC and DRIFA_NET_SPEC give it: BN(1x1 conv, stride s)
    when s != 1 or `projection`, else the identity, which needs as many input channels as filters
    (a mismatch is an error, not a silent projection). Subclasses build their path, then
    `_build_shortcut`, and add `_shortcut(x)` to it."""

    def __init__(self, filters, strides=1, projection=False, shortcut_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.projection = projection
        self._shortcut_bias = shortcut_bias

    def _build_shortcut(self, input_shape):
        channels = check_rank4(self, input_shape)
        self.use_projection = self.projection or self.strides != 1
        if not self.use_projection and channels != self.filters:
            raise ValueError(f"{self.name}: the identity shortcut needs {self.filters} input channels, got "
                             f"{channels}; set projection=True")
        if self.use_projection:
            self.shortcut = Conv2D(self.filters, 1, strides=self.strides,
                                                use_bias=self._shortcut_bias, name="shortcut")
            self.shortcut_bn = BatchNormalization(name="shortcut_bn")
            self.shortcut.build(input_shape)
            self.shortcut_bn.build(self.shortcut.compute_output_shape(input_shape))

    def _shortcut(self, x, training):
        if not self.use_projection:
            return x
        return conv_bn(self.shortcut, self.shortcut_bn, x, training)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        return (b, None if h is None else -(-h // s), None if w is None else -(-w // s), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "projection": self.projection}


@register
@saved_before(ca_pools="notebook", depthwise_init="keras", zero_init_residual=False)
@with_defense_config
class ERLA(ShortcutBlock):
    """ERLA (Eq. 1, notebook form): ReLU(shortcut(x) + BN(PW(EMILA_1(ReLU(BN(EMILA_s(x))))))).

    PW is a plain 1x1 conv: the paper writes GPC, the notebook's plain 1x1 is what matches the
    published parameter count. The Robust-MAIL settings (RPF@E, MAN in CA) go to both EMILAs.
    zero_init_residual starts the last BN's scale at 0, so the block starts as its shortcut (Goyal
    et al. 2017): ERLA then trained as fast as a ResNet basic block (docs/TRAINABILITY.md).
    """

    def __init__(self, filters, strides=1, projection=False, ca_pools="paper", attention_init="paper",
                 depthwise_init="fan_in", zero_init_residual=True, defense=None, **kwargs):
        super().__init__(filters, strides, projection, shortcut_bias=True, **kwargs)
        self.ca_pools, self.attention_init, self.depthwise_init = ca_pools, attention_init, depthwise_init
        self.zero_init_residual = zero_init_residual
        self.defense = Defense.of(defense)
        settings = dict(ca_pools=ca_pools, attention_init=attention_init, depthwise_init=depthwise_init,
                        defense=self.defense)
        self.emila1 = EMILA(filters, strides=strides, name="emila1", **settings)
        self.bn1 = BatchNormalization(name="bn1")
        self.emila2 = EMILA(filters, name="emila2", **settings)
        self.pw = Conv2D(filters, 1, name="pw")
        self.bn2 = BatchNormalization(gamma_initializer="zeros" if zero_init_residual else "ones",
                                                   name="bn2")

    def build(self, input_shape):
        self._build_shortcut(input_shape)
        self.emila1.build(input_shape)
        out = self.emila1.compute_output_shape(input_shape)
        for layer in (self.bn1, self.emila2, self.pw, self.bn2):
            layer.build(out)

    def call(self, x, training=None):
        y = tf.nn.relu(self.bn1(self.emila1(x, training=training), training=training))
        y = conv_bn(self.pw, self.bn2, self.emila2(y, training=training), training)
        return tf.nn.relu(self._shortcut(x, training) + y)

    def get_config(self):
        return {**super().get_config(), "zero_init_residual": self.zero_init_residual, **_form_config(self)}


@register
class ResidualBlock(ShortcutBlock):
    """Plain ResNet basic block (He et al. 2016): the ERLA ablation and the reference network."""

    def __init__(self, filters, strides=1, projection=False, **kwargs):
        super().__init__(filters, strides, projection, shortcut_bias=False, **kwargs)
        self.conv1 = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                         name="conv1")
        self.bn1 = BatchNormalization(name="bn1")
        self.conv2 = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name="conv2")
        self.bn2 = BatchNormalization(name="bn2")

    def build(self, input_shape):
        self._build_shortcut(input_shape)
        self.conv1.build(input_shape)
        out = self.conv1.compute_output_shape(input_shape)
        for layer in (self.bn1, self.conv2, self.bn2):
            layer.build(out)

    def call(self, x, training=None):
        y = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        y = self.bn2(self.conv2(y), training=training)
        return tf.nn.relu(self._shortcut(x, training) + y)
