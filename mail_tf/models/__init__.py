from mail_tf.models.drifa import build_drifa_net
from mail_tf.models.mail import BACKBONES, BLOCKS, build_mail
from mail_tf.models.registry import PRESETS, build_model
from mail_tf.models.robust_mail import build_robust_mail

__all__ = ["BACKBONES", "BLOCKS", "PRESETS", "build_drifa_net", "build_mail", "build_model", "build_robust_mail"]
