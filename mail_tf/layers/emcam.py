"""EMCAM (MAIL_SPEC §2.3, Eqs. 5-13): frequency (MFIFA) and spatial (EMSCA) attention over all
modalities, fused into one map A_m that recalibrates every modality."""

import keras
import tensorflow as tf

from mail_tf.layers.conv import Conv2D
from mail_tf.layers.dct import channel_dct
from mail_tf.layers.defense import Defense, with_defense_config
from mail_tf.layers.gates import ATTENTION_INITS, check_choice, per_channel, scale_initializer, sigmoid_gate
from mail_tf.layers.noise import AttentionNoise
from mail_tf.layers.residual import GPC_GROUPS, MSGDC
from mail_tf.layers.serialization import register, saved_before

FUSIONS = ("parallel", "cascaded", "mfifa", "emsca")


def _check_modalities(layer, input_shape, modalities):
    shapes = [tuple(s) for s in input_shape] if isinstance(input_shape, (list, tuple)) else None
    if not shapes or not all(isinstance(s, tuple) and len(s) == 4 for s in shapes):
        raise ValueError(f"{layer.name}: expected a list of {modalities} (batch, height, width, channels) "
                         f"tensors, one per modality, got {input_shape}")
    if len(shapes) != modalities:
        raise ValueError(f"{layer.name}: built for {modalities} modalities, got {len(shapes)} inputs")
    if len({s[1:] for s in shapes}) != 1:
        raise ValueError(f"{layer.name}: every modality must reach this block with the same (height, width, "
                         f"channels); got {[s[1:] for s in shapes]}. Give all modalities the same image size.")
    return shapes[0]


def _global_pools(x):
    return tf.reduce_min(x, axis=(1, 2)), tf.reduce_mean(x, axis=(1, 2)), tf.reduce_max(x, axis=(1, 2))


@register
class MFIFA(keras.layers.Layer):
    """Multimodal frequency-domain information fusion attention (Eqs. 6-9); returns A_f (B, H, W, C).

    D_i is the orthonormal DCT-II of x_i along channels (notebook). Its GMN/GAP/GMP descriptors go
    through one shared Dense(C, sigmoid) f (notebook); then, as in the paper:
    low = f(GMN) + f(GAP); high = (D - f(GMN)) + (D - f(GAP)) + f(GMP); mean = high - low;
    A_f = sigmoid(sum_i alpha_i*low_i + phi_i*high_i + gamma_i*mean_i).
    attention_init="paper" (default) starts alpha, phi, gamma at 1, where A_f's pre-activation is
    ~4x the DCT coefficients and about half its entries start saturated; "neutral" starts them at 0
    (A_f = 0.5 everywhere, the sigmoid's full slope). docs/TRAINABILITY.md compares the two.
    """

    def __init__(self, modalities=2, attention_init="paper", **kwargs):
        super().__init__(**kwargs)
        self.modalities = modalities
        self.attention_init = check_choice("attention_init", attention_init, ATTENTION_INITS)

    def build(self, input_shape):
        _, _, _, c = _check_modalities(self, input_shape, self.modalities)
        self.descriptor = keras.layers.Dense(c, name="descriptor")   # f of Eqs. 6-7, a sigmoid gate
        self.descriptor.build((None, c))
        m = self.modalities
        start = scale_initializer(self.attention_init)
        self.alpha = self.add_weight(name="alpha", shape=(m,), initializer=start)
        self.phi = self.add_weight(name="phi", shape=(m,), initializer=start)
        self.gamma = self.add_weight(name="gamma", shape=(m,), initializer=start)

    def pre_activation(self, xs):
        total = 0.0
        for i, x in enumerate(xs):
            d = channel_dct(x)
            f_min, f_avg, f_max = (per_channel(sigmoid_gate(self, self.descriptor(p), "descriptor"))
                                   for p in _global_pools(d))
            low = f_min + f_avg
            high = (d - f_min) + (d - f_avg) + f_max
            mean = high - low
            total += (tf.cast(self.alpha[i], x.dtype) * low + tf.cast(self.phi[i], x.dtype) * high
                      + tf.cast(self.gamma[i], x.dtype) * mean)
        return total

    def call(self, xs):
        return sigmoid_gate(self, self.pre_activation(xs), "A_f")

    def flops(self, input_shapes):
        """The channel DCT is a (C, C) matmul per pixel and modality (`mail_tf.flops`)."""
        return sum(2 * b * h * w * c * c for b, h, w, c in input_shapes)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "modalities": self.modalities, "attention_init": self.attention_init}


class _CrossModal(keras.layers.Layer):
    """What EMSCA and EMCAM share: the number of modalities, how their gates and depth-wise kernels
    start, and their defenses."""

    def __init__(self, modalities, attention_init, depthwise_init, defense, **kwargs):
        super().__init__(**kwargs)
        self.modalities = modalities
        self.attention_init = check_choice("attention_init", attention_init, ATTENTION_INITS)
        self.depthwise_init = depthwise_init
        self.defense = Defense.of(defense)

    def get_config(self):
        return {**super().get_config(), "modalities": self.modalities, "attention_init": self.attention_init,
                "depthwise_init": self.depthwise_init, "defense": self.defense.get_config()}


@register
@saved_before(depthwise_init="keras")
@with_defense_config
class EMSCA(_CrossModal):
    """Efficient multimodal spatial-domain cross attention (Eqs. 10-12); returns A_s (B, 1, 1, C).

    g = Conv1x1(MSGDC'(x)), one MSGDC' (bias-free GPC, DW3, DW5) shared by all modalities;
    S(x) = GAP(g(x)) + GMP(g(x)); A_s = sigmoid(sum_i theta_i * (S(x_i) + S(x_{m-i+1}) + S(S(x_i)))).
    The symmetric cross-modal pairing is the paper's; the notebook accumulates asymmetrically.
    attention_init="paper" (default) starts theta_i at 1, "neutral" at 0 (A_s = 0.5).
    Robust-MAIL (Eq. 23): `defense.rpf_ratio` > 0 puts random projection filters into MSGDC'.
    """

    def __init__(self, modalities=2, attention_init="paper", depthwise_init="fan_in", defense=None, **kwargs):
        super().__init__(modalities, attention_init, depthwise_init, defense, **kwargs)

    def build(self, input_shape):
        _, _, _, c = _check_modalities(self, input_shape, self.modalities)
        self.msgdc = MSGDC(c, groups=GPC_GROUPS, use_bias=False, depthwise_init=self.depthwise_init,
                           defense=self.defense, name="msgdc")
        self.project = Conv2D(c, 1, name="project")
        self.msgdc.build(input_shape[0])
        self.project.build(self.msgdc.compute_output_shape(input_shape[0]))
        self.theta = self.add_weight(name="theta", shape=(self.modalities, c),
                                     initializer=scale_initializer(self.attention_init))

    def scale_tables(self):
        """theta (modalities, C): a scale vector per modality, never weight-decayed."""
        return [self.theta]

    def squeeze(self, x):
        """S(x) = GAP(g(x)) + GMP(g(x)), kept as a (B, 1, 1, C) map."""
        g = self.project(self.msgdc(x))
        return tf.reduce_mean(g, axis=(1, 2), keepdims=True) + tf.reduce_max(g, axis=(1, 2), keepdims=True)

    def pre_activation(self, xs):
        s = [self.squeeze(x) for x in xs]
        m = len(xs)
        return sum(tf.cast(self.theta[i], x.dtype) * (s[i] + s[m - 1 - i] + self.squeeze(s[i]))
                   for i, x in enumerate(xs))

    def call(self, xs):
        return sigmoid_gate(self, self.pre_activation(xs), "A_s")

    def compute_output_shape(self, input_shape):
        b, _, _, c = input_shape[0]
        return (b, 1, 1, c)


@register
@saved_before(depthwise_init="keras")
@with_defense_config
class EMCAM(_CrossModal):
    """Efficient multimodal cross-attention module (Eqs. 5, 13). Takes and returns a list of m maps.

    fusion="parallel" (the paper's): A_m = sigmoid(theta_f*A_f + theta_s*A_s); x_i <- x_i*A_m*theta_m,i.
    Ablations (paper Tables 4, 6): "mfifa" or "emsca" alone (the other term dropped), and "cascaded":
    x_i <- x_i * sigmoid(theta_f*A_f), then EMSCA on the result, x_i <- x_i * sigmoid(theta_s*A_s) * theta_m,i.

    attention_init="paper" (default) starts every scale at 1; "neutral" starts theta_f and theta_s at
    0, so A_m starts at a uniform 0.5 (in the cascaded form both gates do), and theta_m at the
    inverse of that, so EMCAM starts as the identity and learns its attention from there (MFIFA's
    and EMSCA's own scales start at 0 too; `mail_tf.layers.gates`).

    Robust-MAIL (`defense`): rpf_ratio > 0 puts random projection filters into EMSCA (Eq. 23);
    man_sigma > 0 adds modulated attention noise to A_f, A_s and A_m (Eqs. 24-26; added after the sigmoid and clipped,
    as the notebook does).
    """

    def __init__(self, modalities=2, fusion="parallel", attention_init="paper", depthwise_init="fan_in",
                 defense=None, **kwargs):
        super().__init__(modalities, attention_init, depthwise_init, defense, **kwargs)
        if fusion not in FUSIONS:
            raise ValueError(f"EMCAM fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.mfifa = MFIFA(modalities, attention_init=attention_init, name="mfifa") if fusion != "emsca" else None
        self.emsca = (EMSCA(modalities, attention_init=attention_init, depthwise_init=depthwise_init,
                            defense=self.defense, name="emsca")
                      if fusion != "mfifa" else None)
        man = self.defense.man
        noise = lambda name: AttentionNoise(**man, name=name) if man else None
        self.noise_f = noise("man_f") if self.mfifa is not None else None
        self.noise_s = noise("man_s") if self.emsca is not None else None
        self.noise_m = noise("man_m")

    def build(self, input_shape):
        _, _, _, c = _check_modalities(self, input_shape, self.modalities)
        input_shape = [tuple(s) for s in input_shape]
        neutral = self.attention_init == "neutral"
        gate_scale = scale_initializer(self.attention_init)
        if self.mfifa is not None:
            self.mfifa.build(input_shape)
            self.theta_f = self.add_weight(name="theta_f", shape=(), initializer=gate_scale)
        if self.emsca is not None:
            self.emsca.build(input_shape)
            self.theta_s = self.add_weight(name="theta_s", shape=(c,), initializer=gate_scale)
        # Neutral gates are 0.5 each: one on the output (A_m), two in the cascaded form.
        identity = 4.0 if self.fusion == "cascaded" else 2.0
        self.theta_m = self.add_weight(name="theta_m", shape=(self.modalities, c),
                                       initializer=keras.initializers.Constant(identity if neutral else 1.0))
        for noise in (self.noise_f, self.noise_s, self.noise_m):
            if noise is not None:
                noise.build((None, 1, 1, c))

    def scale_tables(self):
        """theta_m (modalities, C): a scale vector per modality, never weight-decayed."""
        return [self.theta_m]

    @staticmethod
    def _noisy(noise, a):
        return a if noise is None else noise(a)

    def call(self, xs):
        xs = list(xs)
        dtype = xs[0].dtype
        a_f = self._noisy(self.noise_f, self.mfifa(xs)) if self.mfifa is not None else None
        if self.fusion == "cascaded":
            a_f = sigmoid_gate(self, tf.cast(self.theta_f, dtype) * a_f, "A_f'")
            xs = [x * a_f for x in xs]
            a_s = self._noisy(self.noise_s, self.emsca(xs))
            a_m = sigmoid_gate(self, tf.cast(self.theta_s, dtype) * a_s, "A_m")
        else:
            logits = 0.0
            if a_f is not None:
                logits += tf.cast(self.theta_f, dtype) * a_f
            if self.emsca is not None:
                logits += tf.cast(self.theta_s, dtype) * self._noisy(self.noise_s, self.emsca(xs))
            a_m = sigmoid_gate(self, logits, "A_m")
        a_m = self._noisy(self.noise_m, a_m)
        return [x * a_m * tf.cast(self.theta_m[i], dtype) for i, x in enumerate(xs)]

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def get_config(self):
        return {**super().get_config(), "fusion": self.fusion}
