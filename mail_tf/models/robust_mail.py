"""The Robust-MAIL builder (MAIL_SPEC §3, paper Sec. 3.3 and Table 5): MAIL plus random projection
filters (RPF) and modulated attention noise (MAN), each switchable, so every row of Table 5 is one
configuration and all switches off is exactly MAIL."""

from mail_tf.layers.noise import DEFAULT_INIT, DEFAULT_SIGMA
from mail_tf.models.mail import build_mail

DEFAULT_RPF_RATIO = 0.25   # the notebook's earlier cell; its published default 0 switches RPF off
DEFAULT_DECAY = 1e-2       # rho of Eq. 17 (the RPF code's weight decay)


def build_robust_mail(num_classes, input_shape=(128, 128, 3), rpf_erla=True, rpf_emcam=True, man=True,
                      rpf_ratio=DEFAULT_RPF_RATIO, man_sigma=DEFAULT_SIGMA, man_init=DEFAULT_INIT,
                      defense_decay=DEFAULT_DECAY, rpf_std_scale=1.0, name="robust_mail", **mail_settings):
    """Build Robust-MAIL as a functional `keras.Model` (same inputs and outputs as `build_mail`).

    Args:
      rpf_erla: random projection filters in the MSGDC of every ERLA (the paper's `RPF@E`).
      rpf_emcam: random projection filters in EMSCA's MSGDC' of every EMCAM (Table 5's `RPF`).
      man: modulated attention noise in CA (every EMILA) and on EMCAM's A_f, A_s and A_m.
      rpf_ratio: fraction of GPC filters / depth-wise channels that are random, in (0, 1].
      man_sigma: std of MAN's Gaussian eta (notebook: 0.6); man_init: initial channel weight delta.
      defense_decay: rho, L2 on the trainable RPF kernels and the MAN weights (Eq. 17), added to
        `model.losses`.
      rpf_std_scale: multiplies the random kernels' std 1/k (the spec's; see
        `mail_tf.layers.random_projection`: ~0.2 matches the size trained kernels reach).
      **mail_settings: everything `build_mail` takes (backbone, width, fusion, dropout, ...).

    Call `mail_tf.layers.redraw_random_filters(model)` to draw new random filters (Algorithm 2's
    [A] / [I] phases); MAN noise is fresh on every call.
    """
    if not 0 < rpf_ratio <= 1:
        raise ValueError(f"rpf_ratio must be in (0, 1], got {rpf_ratio!r}")
    if not rpf_std_scale > 0:
        raise ValueError(f"rpf_std_scale must be positive, got {rpf_std_scale!r}")
    if man and not man_sigma > 0:
        raise ValueError(f"man_sigma must be positive, got {man_sigma!r}")
    noise = dict(man_sigma=man_sigma if man else 0.0, man_init=man_init)
    rpf = dict(defense_decay=defense_decay, rpf_std_scale=rpf_std_scale)
    block_settings = dict(rpf_ratio=rpf_ratio if rpf_erla else 0.0, **rpf, **noise)
    emcam_settings = dict(rpf_ratio=rpf_ratio if rpf_emcam else 0.0, **rpf, **noise)
    if mail_settings.get("fusion", "parallel") is None and (rpf_emcam or man):
        raise ValueError("RPF in EMCAM and MAN need EMCAM; got fusion=None")
    if not (rpf_erla or rpf_emcam or man):      # all switches off: exactly MAIL
        block_settings = emcam_settings = None
    return build_mail(num_classes, input_shape, block_settings=block_settings, emcam_settings=emcam_settings,
                      name=name, **mail_settings)
