"""The MAIL network builder (MAIL_SPEC §2): one branch per modality, EMCAM after every stage,
one logits head per task on the concatenated branches."""

import keras

from mail_tf.layers import EMCAM, ERLA, FUSIONS, Dropout, MCDropout, ResidualBlock
from mail_tf.models.common import (STAGE_WIDTHS, modality_inputs, normalise_shapes, normalise_tasks,
                                   scaled_width, stem)

BACKBONES = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}
BLOCKS = {"erla": ERLA, "plain": ResidualBlock}


def build_mail(num_classes, input_shape=(128, 128, 3), backbone="resnet18", width=1.0, block="erla",
               fusion="parallel", dropout=0.25, mc_dropout=False, ca_pools="paper", attention_init="paper",
               depthwise_init="fan_in", zero_init_residual=True, block_defense=None, emcam_defense=None,
               name="mail"):
    """Build a MAIL network as a functional `keras.Model`.

    Args:
      num_classes: {task_name: classes}, one task per modality in input order (or a list of counts).
      input_shape: (H, W, C) for every modality, or a list with one shape per modality. Inputs are
        images in [0, 1]; scaling to [-1, 1] happens inside the model.
      backbone: "resnet18" ([2, 2, 2, 2] blocks) or "resnet50" ([3, 4, 6, 3]).
      width: multiplier on the stage widths 64-512 (rounded to multiples of 16), for small tests.
      block: "erla" (MAIL) or "plain" (ResNet basic block; the ERLA ablation).
      fusion: EMCAM mode, one of "parallel", "cascaded", "mfifa", "emsca", or None for no EMCAM.
      dropout: rate after the first block of stages 2-4.
      mc_dropout: keep that dropout active at inference (Monte-Carlo estimates).
      ca_pools: "paper" (Eq. 4: GMN, GAP, GMP) or "notebook" (adds the global sum, which saturates
        the channel attention at 64 px and above; compatibility only).
      attention_init: "paper" (every learnable attention scale starts at 1, as the notebooks) or
        "neutral" (every gate starts at a uniform 0.5 and EMCAM as the identity; it learnt more
        slowly in docs/TRAINABILITY.md's probes).
      depthwise_init: "fan_in" (depth-wise kernels with std 1/k) or "keras" (Keras's glorot, which
        counts the input channels into a depth-wise filter's fan-in and starts ~sqrt(C) smaller).
      zero_init_residual: start the last BN scale of every ERLA at 0, so each block starts as its
        shortcut (Goyal et al. 2017); False: Keras's 1 (the notebooks). Plain blocks keep Keras's
        init, so `resnet18_pair` stays the standard reference.
      block_defense, emcam_defense: the `Defense` of every ERLA / EMCAM (Robust-MAIL's; see
        `build_robust_mail`); None: none, plain MAIL.

    Returns:
      A model taking a list of m image batches and returning {task_name: logits}.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    if fusion is not None and fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS} or None, got {fusion!r}")
    tasks = normalise_tasks(num_classes)
    m = len(tasks)
    shapes = normalise_shapes(input_shape, m)
    if fusion is not None and len({s[:2] for s in shapes}) != 1:
        raise ValueError(f"EMCAM fuses the modalities pixel by pixel: all inputs need the same height and "
                         f"width, got {[s[:2] for s in shapes]}")
    widths = [scaled_width(w, width) for w in STAGE_WIDTHS]
    block_cls = BLOCKS[block]
    block_settings = {}
    if block_defense is not None and block != "erla":
        raise ValueError(f"the block defenses ({block_defense}) need ERLA blocks, got block={block!r}")
    if block == "erla":
        block_settings = dict(ca_pools=ca_pools, attention_init=attention_init, depthwise_init=depthwise_init,
                              zero_init_residual=zero_init_residual, defense=block_defense)
    emcam_settings = dict(attention_init=attention_init, depthwise_init=depthwise_init, defense=emcam_defense)
    dropout_cls = MCDropout if mc_dropout else Dropout

    inputs, branches = modality_inputs(tasks, shapes)
    xs = [stem(keras.layers.Rescaling(2.0, offset=-1.0, name=f"{task}_normalize")(x), task, widths[0])
          for (task, _), x in zip(tasks, branches)]

    for stage, (blocks, filters) in enumerate(zip(BACKBONES[backbone], widths), start=1):
        for b in range(blocks):
            strides = 2 if (b == 0 and stage > 1) else 1
            for i, (task, _) in enumerate(tasks):
                xs[i] = block_cls(filters, strides=strides, projection=strides != 1,
                                  name=f"{task}_stage{stage}_block{b + 1}", **block_settings)(xs[i])
                if b == 0 and stage > 1 and dropout:
                    xs[i] = dropout_cls(dropout, name=f"{task}_stage{stage}_dropout")(xs[i])
        if fusion is not None:
            xs = EMCAM(m, fusion=fusion, name=f"stage{stage}_emcam", **emcam_settings)(xs)

    z = keras.layers.Concatenate(name="concat")(xs) if m > 1 else xs[0]
    z = keras.layers.GlobalAveragePooling2D(name="gap")(z)
    outputs = {task: keras.layers.Dense(n, name=task)(z) for task, n in tasks}
    return keras.Model(inputs, outputs, name=name)
