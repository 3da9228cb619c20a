"""Trainability diagnostics (docs/TRAINABILITY.md): how saturated the attention gates are, and how
much signal and gradient reach each stage, for any model `mail_tf.build_model` makes.

  gate_saturation(model, images)      one row per sigmoid gate: saturated fraction, mean, spread
  signal_propagation(model, images)   per stage: activation RMS and the gradient norm of its weights

Both run the model eagerly once on a batch (`images`: a list of (B, H, W, C) arrays in [0, 1], one
per modality) and return plain dicts, so reports and tests can compare models and settings.
"""

import re

import keras
import numpy as np
import tensorflow as tf

from mail_tf.layers.gates import record_gates

SATURATION = 0.02   # a gate entry below this or above 1 - this has < 2 % of the sigmoid's peak slope


def _gate_kind(layer, name):
    """A short label: the layer class and, where a layer has several gates, which one."""
    kind = type(layer).__name__
    return kind if name == "gate" else f"{kind}.{name}"


def gate_saturation(model, images, training=True, threshold=SATURATION):
    """Every sigmoid gate evaluated on `images`, in call order (by default in training mode, with
    batch statistics in BN, as the training step sees them).

    Returns a list of {"path", "kind", "stage", "shape", "saturated", "mean", "std"}: `saturated`
    is the fraction of entries < threshold or > 1 - threshold (their gradient is ~0);
    `stage` is the backbone stage the gate sits in (0 when the path names none).
    """
    with record_gates() as records:
        model([tf.convert_to_tensor(x, tf.float32) for x in images], training=training)
    rows = []
    for layer, name, gate in records:
        g = np.asarray(gate)
        stage = re.search(r"stage(\d+)", layer.path) or re.search(r"block(\d+)", layer.path)
        rows.append({"path": f"{layer.path}:{name}", "kind": _gate_kind(layer, name),
                     "stage": int(stage.group(1)) if stage else 0, "shape": list(g.shape),
                     "saturated": float(np.mean((g < threshold) | (g > 1 - threshold))),
                     "mean": float(g.mean()), "std": float(g.std())})
    return rows


def saturation_by_kind(rows):
    """{kind: mean saturated fraction over its gates} from `gate_saturation` rows."""
    kinds = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(row["saturated"])
    return {kind: float(np.mean(values)) for kind, values in kinds.items()}


def _stage_outputs(model):
    """{stage: (layers, weight-path pattern)}: the layers whose outputs end each stage of each
    branch (MAIL's EMCAM when the model fuses, else each branch's last block; DRIFA-Net's MIFA after
    each of its 8 blocks) and the pattern of the weight paths inside that stage."""
    ends = {}
    for layer in model.layers:
        mail = re.fullmatch(r"(?:.+_)?stage(\d+)_(emcam|block\d+)", layer.name)
        drifa = re.fullmatch(r"block(\d+)_mifa", layer.name)
        if mail:
            ends.setdefault(int(mail.group(1)), {}).setdefault(mail.group(2), []).append(layer)
        elif drifa:
            ends.setdefault(int(drifa.group(1)), {}).setdefault("mifa", []).append(layer)
    out = {}
    for stage, kinds in sorted(ends.items()):
        if "mifa" in kinds:
            out[stage] = (kinds["mifa"], rf"(^|_)block{stage}(_|/)")
        elif "emcam" in kinds:
            out[stage] = (kinds["emcam"], rf"(^|_)stage{stage}_")
        else:
            last = max(kinds, key=lambda k: int(k[len("block"):]))
            out[stage] = (kinds[last], rf"(^|_)stage{stage}_")
    return out


def _loss(outputs, labels):
    losses = [tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels[t], outputs[t], from_logits=True))
              for t in outputs]
    return tf.add_n(losses) / len(losses)


def signal_propagation(model, images, labels=None, training=True):
    """Activation scale and gradient per stage on one batch.

    Returns {"stages": [{"stage", "rms", "grad_norm"}], "loss", "head_rms", "head_spread",
    "logit_std"}: `rms` is the root-mean-square of the stage's output (all branches), `grad_norm`
    the L2 norm of the loss gradient over that stage's trainable weights (labels: {task: ints};
    default all zeros), `head_rms` the RMS of the pooled features the heads read, `head_spread` how
    much they vary between images (mean per-feature std over the batch / head_rms: ~0 when the
    input's signal does not reach the heads) and `logit_std` the logits' spread.
    """
    stages = _stage_outputs(model)
    probes = [layer.output for layers, _ in stages.values() for layer in layers]
    probes = [p for out in probes for p in (out if isinstance(out, (list, tuple)) else [out])]
    head = model.get_layer("gap").output if "gap" in [l.name for l in model.layers] else None
    probe_model = keras.Model(model.inputs, [model.outputs, probes] + ([head] if head is not None else []))
    xs = [tf.convert_to_tensor(x, tf.float32) for x in images]
    if labels is None:
        labels = {name: tf.zeros(len(images[0]), tf.int64) for name in model.output_names}
    with tf.GradientTape() as tape:
        result = probe_model(xs, training=training)
        outputs = result[0]
        outputs = outputs if isinstance(outputs, dict) else dict(zip(model.output_names, outputs))
        loss = _loss(outputs, labels)
    variables = model.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    rows, i = [], 0
    for stage, (layers, pattern) in stages.items():
        n = sum(len(l.output) if isinstance(l.output, (list, tuple)) else 1 for l in layers)
        acts = result[1][i:i + n]
        i += n
        g2 = sum(float(tf.reduce_sum(tf.square(g))) for path, g in grads.items()
                 if g is not None and re.search(pattern, path))
        rows.append({"stage": stage, "rms": float(np.sqrt(np.mean([np.mean(np.square(a)) for a in acts]))),
                     "grad_norm": float(np.sqrt(g2))})
    logits = np.concatenate([np.ravel(o) for o in outputs.values()])
    head_rms = head_spread = None
    if head is not None:
        features = np.asarray(result[2])
        head_rms = float(np.sqrt(np.mean(np.square(features))))
        head_spread = float(np.mean(np.std(features, axis=0)) / max(head_rms, 1e-12))
    return {"stages": rows, "loss": float(loss), "head_rms": head_rms, "head_spread": head_spread,
            "logit_std": float(np.std(logits))}
