"""Named model presets: what `--models` / `MODEL=` accept."""

from mail_tf.models.mail import build_mail

PRESETS = {
    "mail_rn18": dict(backbone="resnet18"),
    "mail_rn50": dict(backbone="resnet50"),
    # The reference point: two plain ResNet-18 branches, no attention, same heads.
    "resnet18_pair": dict(backbone="resnet18", block="plain", fusion=None),
    "resnet50_pair": dict(backbone="resnet50", block="plain", fusion=None),
}


def build_model(name, num_classes, input_shape=(128, 128, 3), **overrides):
    """Build the preset `name` (see PRESETS); keyword overrides go to `build_mail`."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return build_mail(num_classes, input_shape, name=name, **{**PRESETS[name], **overrides})
