"""Named model presets: what `--model` / `MODEL=` accept."""

from mail_tf.models.drifa import build_drifa_net
from mail_tf.models.mail import build_mail
from mail_tf.models.robust_mail import build_robust_mail

# name: (builder, its settings). Every builder takes (num_classes, input_shape, width=, dropout=,
# mc_dropout=, name=).
PRESETS = {
    "mail": (build_mail, dict(backbone="resnet18")),
    "mail_rn18": (build_mail, dict(backbone="resnet18")),
    "mail_rn50": (build_mail, dict(backbone="resnet50")),
    # The reference point: two plain ResNet-18 branches, no attention, same heads.
    "resnet18_pair": (build_mail, dict(backbone="resnet18", block="plain", fusion=None)),
    "resnet50_pair": (build_mail, dict(backbone="resnet50", block="plain", fusion=None)),
    # MAIL with random projection filters (RPF@E and in EMCAM) and modulated attention noise.
    "robust_mail": (build_robust_mail, dict(backbone="resnet18")),
    # The paper's strongest competitor, its authors' previous system (DRIFA_NET_SPEC).
    "drifa_net": (build_drifa_net, {}),
}


def build_model(name, num_classes, input_shape=(128, 128, 3), **overrides):
    """Build the preset `name` (see PRESETS); keyword overrides go to its builder."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    builder, settings = PRESETS[name]
    return builder(num_classes, input_shape, name=name, **{**settings, **overrides})
