"""mail-tf: MAIL, Robust-MAIL and DRIFA-Net for multimodal medical image analysis in TensorFlow/Keras."""

__version__ = "0.1.0"

from mail_tf import layers  # noqa: F401  (registers the layers for deserialisation)
from mail_tf.models import PRESETS, build_drifa_net, build_mail, build_model, build_robust_mail  # noqa: E402

__all__ = ["PRESETS", "build_drifa_net", "build_mail", "build_model", "build_robust_mail", "layers"]
