"""Robust-MAIL's defense settings (MAIL_SPEC §3): one object, one name per concept, from the builder
(`build_robust_mail`'s arguments and a run's `model_options`) down to the leaf layers.

  rpf_ratio        fraction of a convolution's filters that are random projection filters (RPF)
  rpf_std_scale    multiplies the random (and standardised trainable) kernels' std 1/k
  rpf_standardize  weight-standardise the trainable RPF kernels in every forward pass
  defense_decay    rho of Eq. 17: decoupled decay of the trainable RPF kernels
  man_sigma        std of modulated attention noise's eta (MAN; 0: no noise)
  man_init         initial value of MAN's channel weight delta
  man_decay        decoupled decay of delta

The leaf layers (`RandomProjection*Conv2D`, `AttentionNoise`) take the same names; the blocks
(MSGDC, ChannelAttention, EMILA, ERLA, EMSCA, EMCAM) take a `Defense` as `defense=`. Models saved
with the old spellings (the leaves' `random_ratio`, `weight_decay`, `std_scale`, `standardize`,
`sigma`, `initial_weight`; the blocks' flat keys) still load, with a deprecation message.
"""

import dataclasses
import warnings

DEFAULT_SIGMA = 0.6   # the notebook's sigma
DEFAULT_INIT = 0.1    # delta's initial value: our choice (the notebook's delta is a fixed scalar)

RPF_FIELDS = ("rpf_ratio", "rpf_std_scale", "rpf_standardize", "defense_decay")
MAN_FIELDS = ("man_sigma", "man_init", "man_decay")


@dataclasses.dataclass(frozen=True)
class Defense:
    """Which defenses a block carries and how they are set; the default is none (plain MAIL)."""

    rpf_ratio: float = 0.0
    rpf_std_scale: float = 1.0
    rpf_standardize: bool = True
    defense_decay: float = 0.0
    man_sigma: float = 0.0
    man_init: float = DEFAULT_INIT
    man_decay: float = 0.0

    def __post_init__(self):
        for name, ok, expected in (("rpf_ratio", 0 <= self.rpf_ratio <= 1, "in [0, 1]"),
                                   ("rpf_std_scale", self.rpf_std_scale > 0, "positive"),
                                   ("defense_decay", self.defense_decay >= 0, ">= 0"),
                                   ("man_sigma", self.man_sigma >= 0, ">= 0"),
                                   ("man_decay", self.man_decay >= 0, ">= 0")):
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, value):
        """A Defense from a Defense, its config dict or None (no defense)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        return cls(**value)

    @property
    def rpf(self):
        """The RPF settings, as the RPF convolutions take them (None when RPF is off)."""
        return {name: getattr(self, name) for name in RPF_FIELDS} if self.rpf_ratio else None

    @property
    def man(self):
        """The MAN settings, as `AttentionNoise` takes them (None when MAN is off)."""
        return {name: getattr(self, name) for name in MAN_FIELDS} if self.man_sigma else None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def get_config(self):
        return dataclasses.asdict(self)


def warn_renamed(cls_name, old_names):
    warnings.warn(f"{cls_name}: the saved config uses old setting names {sorted(old_names)} (see "
                  "mail_tf.layers.defense); it loads as before, and saving the model again writes today's names",
                  FutureWarning, stacklevel=3)


def with_defense_config(cls):
    """Class decorator for the blocks: `defense` in the config as a dict; a config saved with the
    flat keys of before (`rpf_ratio=...`, `man_sigma=...`; no `rpf_standardize`: the raw kernels
    of then) loads as the same Defense."""
    from_config = cls.from_config.__func__

    @classmethod
    def defense_from_config(klass, config):
        config = dict(config)
        flat = {k: config.pop(k) for k in RPF_FIELDS + MAN_FIELDS if k in config}
        if config.get("defense") is None and flat:
            warn_renamed(klass.__name__, flat)
            config["defense"] = {"rpf_standardize": False, **flat}
        return from_config(klass, config)

    cls.from_config = defense_from_config
    return cls
