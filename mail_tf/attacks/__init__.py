"""Adversarial attacks on multi-input, multi-head models (all modalities jointly, or chosen ones)."""

from mail_tf.attacks.gradient import METHODS, SignAttack, project, sign_attack, tmtl_objective

__all__ = ["METHODS", "SignAttack", "project", "sign_attack", "tmtl_objective"]
