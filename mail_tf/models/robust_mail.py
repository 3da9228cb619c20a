"""The Robust-MAIL builder (MAIL_SPEC §3, paper Sec. 3.3 and Table 5): MAIL plus random projection
filters (RPF) and modulated attention noise (MAN), each switchable, so every row of Table 5 is one
configuration and all switches off is exactly MAIL."""

from mail_tf.layers.defense import DEFAULT_INIT, DEFAULT_SIGMA, Defense
from mail_tf.models.mail import build_mail

DEFAULT_RPF_RATIO = 0.25   # the notebook's earlier cell; its published default 0 switches RPF off
DEFAULT_DECAY = 1e-2       # rho of Eq. 17: the RPF code's weight decay, decoupled, on the trainable RPF kernels
DEFAULT_MAN_DECAY = 1e-4   # decoupled decay of MAN's delta: ours, 100x weaker, so training does not switch MAN off


def build_robust_mail(num_classes, input_shape=(128, 128, 3), rpf_erla=True, rpf_emcam=True, man=True,
                      rpf_ratio=DEFAULT_RPF_RATIO, man_sigma=DEFAULT_SIGMA, man_init=DEFAULT_INIT,
                      defense_decay=DEFAULT_DECAY, man_decay=DEFAULT_MAN_DECAY, rpf_std_scale=1.0,
                      rpf_standardize=True, name="robust_mail", **mail_settings):
    """Build Robust-MAIL as a functional `keras.Model` (same inputs and outputs as `build_mail`).

    Args:
      rpf_erla: random projection filters in the MSGDC of every ERLA (the paper's `RPF@E`).
      rpf_emcam: random projection filters in EMSCA's MSGDC' of every EMCAM (Table 5's `RPF`).
      man: modulated attention noise in CA (every EMILA) and on EMCAM's A_f, A_s and A_m.
      rpf_ratio: fraction of GPC filters / depth-wise channels that are random, in (0, 1].
      man_sigma: std of MAN's Gaussian eta (notebook: 0.6); man_init: initial channel weight delta.
      defense_decay: rho of Eq. 17, decoupled weight decay on the trainable RPF kernels
        (w <- w - lr * rho * w per step, as the RPF code's SGD `weight_decay`; applied by the
        training step, `mail_tf.training.decay`).
      man_decay: the same decoupled decay on MAN's delta, much weaker than rho so it does not pull
        the noise to zero; the history logs delta's mean and minimum per epoch.
      rpf_std_scale: multiplies the common std 1/k of the random kernels and of the standardised
        trainable ones.
      rpf_standardize: weight-standardise the trainable RPF kernels to the random ones' std in every
        forward pass, as the RPF code does (False: the earlier raw kernels, which 1/k random
        filters swamp; see `mail_tf.layers.random_projection`).
      **mail_settings: everything `build_mail` takes (backbone, width, fusion, dropout, ...).

    Call `mail_tf.layers.redraw_random_filters(model)` to draw new random filters (Algorithm 2's
    [A] / [I] phases); MAN noise is fresh on every call.
    """
    if not 0 < rpf_ratio <= 1:
        raise ValueError(f"rpf_ratio must be in (0, 1], got {rpf_ratio!r}")
    if man and not man_sigma > 0:
        raise ValueError(f"man_sigma must be positive, got {man_sigma!r}")
    defense = Defense(rpf_ratio=rpf_ratio, rpf_std_scale=rpf_std_scale, rpf_standardize=bool(rpf_standardize),
                      defense_decay=defense_decay, man_sigma=man_sigma if man else 0.0, man_init=man_init,
                      man_decay=man_decay)       # checks the other ranges
    if mail_settings.get("fusion", "parallel") is None and (rpf_emcam or man):
        raise ValueError("RPF in EMCAM and MAN need EMCAM; got fusion=None")
    if not (rpf_erla or rpf_emcam or man):      # all switches off: exactly MAIL
        return build_mail(num_classes, input_shape, name=name, **mail_settings)
    block_defense = defense.replace(rpf_ratio=rpf_ratio if rpf_erla else 0.0)
    emcam_defense = defense.replace(rpf_ratio=rpf_ratio if rpf_emcam else 0.0)
    return build_mail(num_classes, input_shape, block_defense=block_defense, emcam_defense=emcam_defense, name=name,
                      **mail_settings)
