"""The DRIFA-Net baseline builder (DRIFA_NET_SPEC §1): per modality a stem with MFA and a ResNet-18
layout of RRA blocks, MIFA across modalities after every block, one logits head per task."""

import keras

from mail_tf.layers import Dropout, MCDropout
from mail_tf.layers.drifa import MFA, MIFA, RRA
from mail_tf.models.common import (STAGE_WIDTHS, modality_inputs, normalise_shapes, normalise_tasks,
                                   scaled_width, stem)

# (stage, first block of the stage): 8 blocks, widths 64-512, first-block strides 1/2/2/2.
BLOCKS = [(stage, b) for stage in range(4) for b in range(2)]
MC_DROPOUT_BLOCKS = 6          # dropout after blocks 1-6
EXTRA_MFA_BLOCKS = 7           # an extra MFA after blocks 1-7


def build_drifa_net(num_classes, input_shape=(128, 128, 3), width=1.0, dropout=0.25, mc_dropout=False,
                    name="drifa_net"):
    """Build DRIFA-Net as a functional `keras.Model` taking m image batches in [0, 1] and returning
    {task: logits}.

    Args mirror `build_mail`: `width` scales the stage widths (multiples of 16) for fast tests;
    `dropout` is the rate of the 13 dropout layers (12 in the branches, 1 before the heads);
    `mc_dropout=True` keeps them active at inference, as the reference intends (§1.4).
    Inputs are used as they come, in [0, 1], as in the reference notebooks.
    """
    tasks = normalise_tasks(num_classes)
    m = len(tasks)
    shapes = normalise_shapes(input_shape, m, network="DRIFA-Net")
    if len({s[:2] for s in shapes}) != 1:
        raise ValueError(f"MIFA fuses the modalities after every block: all inputs need the same height and "
                         f"width, got {[s[:2] for s in shapes]}")
    widths = [scaled_width(w, width) for w in STAGE_WIDTHS]
    dropout_cls = MCDropout if mc_dropout else Dropout

    inputs, branches = modality_inputs(tasks, shapes)
    xs = [stem(x, task, widths[0], attention=MFA(name=f"{task}_stem_mfa")) for (task, _), x in zip(tasks, branches)]

    for k, (stage, b) in enumerate(BLOCKS, start=1):
        strides = 2 if (b == 0 and stage > 0) else 1
        for i, (task, _) in enumerate(tasks):
            xs[i] = RRA(widths[stage], strides=strides, projection=strides != 1, name=f"{task}_block{k}")(xs[i])
            if k <= MC_DROPOUT_BLOCKS and dropout:
                xs[i] = dropout_cls(dropout, name=f"{task}_block{k}_dropout")(xs[i])
            if k <= EXTRA_MFA_BLOCKS:
                xs[i] = MFA(name=f"{task}_block{k}_mfa")(xs[i])
        if m > 1:
            xs = MIFA(m, name=f"block{k}_mifa")(xs)

    z = keras.layers.Concatenate(name="concat")(xs) if m > 1 else xs[0]
    if dropout:
        z = dropout_cls(dropout, name="head_dropout")(z)
    z = keras.layers.GlobalAveragePooling2D(name="gap")(z)
    outputs = {task: keras.layers.Dense(n, name=task)(z) for task, n in tasks}
    return keras.Model(inputs, outputs, name=name)
