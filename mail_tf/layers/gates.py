"""Sigmoid attention gates, recordable for diagnostics.

Every sigmoid gate of MAIL, Robust-MAIL and DRIFA-Net goes through `sigmoid_gate`, so
`record_gates()` can list each gate's map during an eager forward pass (`mail_tf.diagnostics`
measures their saturation and the signal that passes them). Outside a recording the function is
a plain `tf.sigmoid`: nothing is kept and traced graphs are unchanged.
"""

import contextlib

import tensorflow as tf

_recorders = []


def sigmoid_gate(layer, logits, name="gate"):
    """sigmoid(logits), recorded as (layer, name, map) while `record_gates()` is active."""
    gate = tf.sigmoid(logits)
    for recorder in _recorders:
        recorder.append((layer, name, gate))
    return gate


def per_channel(v):
    """(B, C) -> (B, 1, 1, C), to scale (B, H, W, C) maps: a reshape, whose gradient is a reshape too
    (`v[:, None, None, :]`'s is a StridedSliceGrad kernel per call)."""
    return tf.reshape(v, (-1, 1, 1, v.shape[-1]))


@contextlib.contextmanager
def record_gates():
    """Collect (layer, gate name, map) of every gate evaluated inside the block (eager calls)."""
    records = []
    _recorders.append(records)
    try:
        yield records
    finally:
        _recorders.remove(records)


# How MAIL's attention gates start (docs/TRAINABILITY.md):
# "paper" (default): every learnable scale starts at 1, as the notebooks do.
# "neutral": the modulation scalars in front of each sigmoid start at 0, so every gate starts at a
#   uniform 0.5, independent of the input, with the sigmoid's full slope (no saturated entries),
#   and EMCAM's output scale theta_m starts where x * A_m * theta_m == x; the attention is learnt
#   from there, like a zero-initialised residual branch (Goyal et al. 2017; Bachlechner et al. 2021).
#   Measured: it removes every saturated gate but learnt more slowly than "paper".
ATTENTION_INITS = ("paper", "neutral")


def scale_initializer(attention_init):
    """The initializer of the learnable scales in front of a sigmoid gate: 1 ("paper") or 0 ("neutral")."""
    return "zeros" if attention_init == "neutral" else "ones"


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
