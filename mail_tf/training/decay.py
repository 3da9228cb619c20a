"""Weight decay: what `--weight_decay` and `--l2` act on, and the decoupled decay some layers ask for.

Decayed by `--weight_decay` / `--l2`: trainable weights of rank >= 2 (conv and dense kernels),
chosen by rank, not by name, so no scalar or vector is ever decayed — BN's gamma/beta, biases and the
attention scales (CA's theta, MFIFA's alpha/phi/gamma, MAN's delta, DRIFA's lambda). Also exempt:
the per-modality scale tables of EMCAM / EMSCA (shape (modalities, C): a vector per modality;
listed by those layers' `scale_tables()`), and weights a layer decays itself.

Self-decayed (`decayed_weights()` of a layer: [(variable, rate)]): Robust-MAIL's trainable random
projection kernels (rho, Eq. 17) and MAN's delta. Their decay is decoupled, v <- v - lr * rate * v
after each optimiser step — what the RPF code's SGD `weight_decay` does — not an L2 term through
Adam, whose normalisation turned rho = 1e-2 into a pull of ~lr per step on every such weight.
"""

import tensorflow as tf

from mail_tf.layers.walk import sublayers


def self_decayed(model):
    """[(variable, rate)] of every layer in `model` that decays its own weights."""
    return [pair for layer in sublayers(model) if hasattr(layer, "decayed_weights")
            for pair in layer.decayed_weights()]


def decayed_kernels(model):
    """The trainable variables `--weight_decay` and `--l2` act on (see the module docstring)."""
    exempt = {id(v) for v, _ in self_decayed(model)}
    exempt |= {id(v) for layer in sublayers(model) if hasattr(layer, "scale_tables") for v in layer.scale_tables()}
    return [v for v in model.trainable_variables if len(v.shape) >= 2 and id(v) not in exempt]


def apply_decoupled_decay(pairs, learning_rate):
    """v <- v - learning_rate * rate * v for every (v, rate) in `pairs` (call after the optimiser step;
    in a `tf.distribute` cross-replica context it updates every replica's copy)."""
    lr = tf.cast(learning_rate, tf.float32)
    for variable, rate in pairs:
        variable.assign_sub(tf.cast(lr * rate, variable.dtype) * variable)
