"""Modulated attention noise (MAN, Eq. 22; MAIL_SPEC §3) for Robust-MAIL's attention maps.

eta' = eta * (delta + eta * delta), eta ~ N(0, sigma^2) fresh on every call, delta a learnable
channel-wise weight. As in the reference notebook, eta' is added to the post-sigmoid attention map
and the sum is clipped to [0, 1]. The noise is on in training and at inference alike (it is the
defense); only the clip's backward pass can change: `straight_through_clips(model)` makes every MAN
clip pass the gradient unchanged (BPDA), which an adaptive attacker needs (ROBUSTNESS_EVAL.md §2),
while the plain clip has zero gradient where it saturates.

delta's `man_decay` is a decoupled decay (delta <- delta - lr * rate * delta after each step,
applied by the training step, `mail_tf.training.decay`). Robust-MAIL gives it a rate far weaker than
the RPF kernels' rho (`build_robust_mail(man_decay=...)`): an L2 term of rho = 1e-2 through Adam
pulled delta to 0 within a few hundred steps and switched the noise off. The training history logs
delta's mean and minimum per epoch.
"""

import keras
import tensorflow as tf

from mail_tf.layers.checks import check_non_negative, check_positive
from mail_tf.layers.defense import DEFAULT_INIT, DEFAULT_SIGMA
from mail_tf.layers.replica_random import global_batch_draw
from mail_tf.layers.serialization import register, saved_before
from mail_tf.layers.walk import layer_switches, sublayers


def clip_unit(x, straight_through=False):
    """Clip to [0, 1]; with `straight_through` the backward pass is the identity."""
    clipped = tf.clip_by_value(x, 0.0, 1.0)
    if straight_through:
        return x + tf.stop_gradient(clipped - x)
    return clipped


@register
@saved_before(renamed={"sigma": "man_sigma", "initial_weight": "man_init", "weight_decay": "man_decay"})
class AttentionNoise(keras.layers.Layer):
    """clip(a + eta * (delta + eta * delta), 0, 1) for an attention map a (B, ..., C).

    delta has one weight per channel (the map's last axis), starts at `man_init` and is decayed by
    `man_decay` (decoupled, see the module docstring).
    """

    def __init__(self, man_sigma=DEFAULT_SIGMA, man_init=DEFAULT_INIT, man_decay=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_positive(self, "man_sigma", man_sigma)
        check_non_negative(self, "man_decay", man_decay)
        self.man_sigma = man_sigma
        self.man_init = man_init
        self.man_decay = man_decay
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self.straight_through = False   # set by `straight_through_clips`, read when a graph is traced
        self.active = True              # off only for a deterministic export (mail_tf.lite), read likewise

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the attention map needs a known channel axis, got {tuple(input_shape)}")
        self.delta = self.add_weight(
            name="delta", shape=(channels,), initializer=keras.initializers.Constant(self.man_init))

    def call(self, a):
        if not self.active:
            return a
        eta = global_batch_draw(lambda shape: keras.random.normal(shape, stddev=self.man_sigma, seed=self.seed_generator,
                                                                  dtype=a.dtype), tf.shape(a))
        delta = tf.cast(self.delta, a.dtype)
        return clip_unit(a + eta * (delta + eta * delta), self.straight_through)

    def decayed_weights(self):
        """[(variable, rate)] for the training step's decoupled decay."""
        return [(self.delta, self.man_decay)] if self.man_decay else []

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "man_sigma": self.man_sigma, "man_init": self.man_init,
                "man_decay": self.man_decay, "seed": self.seed}


def noise_layers(model):
    """Every MAN layer inside `model` (nested layers included)."""
    return [l for l in sublayers(model) if isinstance(l, AttentionNoise)]


def straight_through_clips(model, enabled=True):
    """Within this block, calls of `model` use the straight-through clip in every MAN layer.

    The flag is read when a graph is traced, so use it inside the traced function, around the model
    call (a `tf.function` traced outside the block keeps the plain clip).
    """
    return layer_switches(model, AttentionNoise, straight_through=enabled)
