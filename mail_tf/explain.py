"""Explanations of multimodal models: Grad-CAM and Grad-CAM++ per task and modality, cross-modal
maps, and a gradient-free occlusion check.

For a model with one branch per modality and one head per task, `maps[task][modality]` explains
task `task`'s logit through the features of branch `modality`. On the diagonal this is the usual
Grad-CAM (paper Fig. 7); off the diagonal it is a *cross-modal* map: where in the other modality's
image the evidence for this task lies, reaching it through the fusion layers (EMCAM, MIFA) and the
shared head.

The target of each branch is, by default, its last spatial feature map: the branch's input to the
`concat` layer before the head (MAIL, Robust-MAIL, `resnet18_pair`: the stage-4 output after the
last fusion; DRIFA-Net: the last block's output after the last MIFA). `targets=[layer names]`
chooses others (one per branch, each a layer with one spatial output).

Randomised models (Robust-MAIL's random projection filters) are explained with the current draw
fixed, or averaged over `draws` fresh draws; either way the result says which.
"""

import keras
import numpy as np
import tensorflow as tf

from mail_tf.layers.random_projection import random_projection_layers, redraw_random_filters

METHODS = ("gradcam", "gradcam++")


def branch_targets(model, targets=None):
    """The feature tensors explained, one per branch (modality), in the model's input order."""
    if targets is not None:
        if len(targets) != len(model.inputs):
            raise ValueError(f"targets: expected one layer name per modality ({len(model.inputs)}), got {targets}")
        tensors = []
        for name in targets:
            try:
                output = model.get_layer(name).output
            except ValueError:
                raise ValueError(f"targets: the model has no layer {name!r}") from None
            if isinstance(output, (list, tuple)) or len(output.shape) != 4:
                raise ValueError(f"targets: layer {name!r} must have one (batch, height, width, channels) output")
            tensors.append(output)
        return tensors
    names = {layer.name for layer in model.layers}
    head_input = model.get_layer("concat").input if "concat" in names else [model.get_layer("gap").input]
    return list(head_input)


class GradCAM:
    """Grad-CAM maps of every task through every branch, in one compiled function per model.

    maps = GradCAM(model)(images)   # images: list of (B, H_m, W_m, C) float batches in [0, 1]
    maps[task][m]: (B, H_m, W_m) float32 in [0, 1] at modality m's input resolution.
    classes: {task: (B,) int} to explain; default each task's predicted class.
    """

    def __init__(self, model, targets=None, method="gradcam"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.model, self.method = model, method
        self.tasks = list(model.output)
        self.features = keras.Model(model.inputs, [branch_targets(model, targets), model.output])
        self.randomized = bool(random_projection_layers(model))
        specs = [tf.TensorSpec((None,) + tuple(x.shape[1:]), tf.float32) for x in model.inputs]
        self._maps = tf.function(self._compute, input_signature=[specs, {t: tf.TensorSpec((None,), tf.int32)
                                                                         for t in self.tasks}])
        self._logits = tf.function(lambda xs: model(xs, training=False), input_signature=[specs])

    def _compute(self, images, classes):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)          # a target that is an input itself (an identity branch) has a gradient too
            feats, logits = self.features(images, training=False)
            scores = {t: tf.gather(tf.cast(logits[t], tf.float32), classes[t], batch_dims=1) for t in self.tasks}
        out = {}
        for t in self.tasks:
            grads = tape.gradient(scores[t], feats)
            out[t] = [self._cam(f, g, tf.shape(x)[1:3]) for f, g, x in zip(feats, grads, images)]
        del tape
        return out

    def _cam(self, feats, grads, size):
        feats = tf.cast(feats, tf.float32)
        grads = tf.zeros_like(feats) if grads is None else tf.cast(grads, tf.float32)
        if self.method == "gradcam":
            weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
        else:   # Grad-CAM++ (Chattopadhay et al. 2018), with the exponential-score second/third derivatives
            g2, g3 = grads ** 2, grads ** 3
            total = tf.reduce_sum(feats, axis=[1, 2], keepdims=True)
            denominator = 2.0 * g2 + total * g3
            alpha = g2 / tf.where(tf.abs(denominator) > 1e-12, denominator, tf.ones_like(denominator))
            weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        return tf.math.divide_no_nan(cam, peak)      # each map in [0, 1]; a map with no evidence is all zero

    def predict(self, images):
        return {t: v.numpy() for t, v in self._logits([tf.convert_to_tensor(x, tf.float32) for x in images]).items()}

    def __call__(self, images, classes=None, draws=1):
        """{task: [maps per modality]} as numpy, plus `explained` (the classes) and `draws`."""
        images = [tf.convert_to_tensor(x, tf.float32) for x in images]
        if classes is None:
            classes = {t: np.argmax(v, axis=-1) for t, v in self.predict(images).items()}
        classes = {t: tf.convert_to_tensor(np.asarray(classes[t]), tf.int32) for t in self.tasks}
        draws = draws if self.randomized else 1
        total = None
        for _ in range(draws):
            if self.randomized and draws > 1:
                redraw_random_filters(self.model)
            maps = self._maps(images, classes)
            total = maps if total is None else {t: [a + b for a, b in zip(total[t], maps[t])] for t in self.tasks}
        out = {t: [(m / draws).numpy() for m in total[t]] for t in self.tasks}
        out["explained"] = {t: c.numpy() for t, c in classes.items()}
        out["draws"] = draws if self.randomized else "deterministic model"
        if self.randomized and draws == 1:
            out["draws"] = "the current random-projection draw, fixed"
        return out


def occlusion(model, images, task, modality, classes=None, patch=8, stride=4, fill=0.5, batch_size=64):
    """Gradient-free check: how much task `task`'s class score drops when a `patch` square of modality
    `modality` is replaced by `fill`, at every `stride`; (B, H, W) in [0, 1] (each map divided by its max)."""
    images = [np.asarray(x, np.float32) for x in images]
    x = images[modality]
    b, h, w = x.shape[:3]
    base = model(images, training=False)[task].numpy()
    if classes is None:
        classes = base.argmax(-1)
    base_score = base[np.arange(b), classes]
    heat, counts = np.zeros((b, h, w), np.float32), np.zeros((h, w), np.float32)
    positions = [(i, j) for i in range(0, max(h - patch, 0) + 1, stride) for j in range(0, max(w - patch, 0) + 1, stride)]
    for start in range(0, len(positions), max(1, batch_size // b)):
        chunk = positions[start:start + max(1, batch_size // b)]
        batch = [np.tile(im, (len(chunk),) + (1,) * (im.ndim - 1)) for im in images]   # chunk k: rows k*b..(k+1)*b
        for k, (i, j) in enumerate(chunk):
            batch[modality][k * b:(k + 1) * b, i:i + patch, j:j + patch] = fill
        scores = model(batch, training=False)[task].numpy().reshape(len(chunk), b, -1)
        for k, (i, j) in enumerate(chunk):
            drop = np.maximum(base_score - scores[k][np.arange(b), classes], 0.0)
            heat[:, i:i + patch, j:j + patch] += drop[:, None, None]
            counts[i:i + patch, j:j + patch] += 1
    heat /= np.maximum(counts, 1)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0)


def right_and_wrong(predicted, labels, k):
    """Indices of the first k correct and the first k wrong predictions (a gallery's picks)."""
    right = np.asarray(predicted) == np.asarray(labels)
    return [int(i) for i in np.flatnonzero(right)[:k]], [int(i) for i in np.flatnonzero(~right)[:k]]


def pointing_game(maps, boxes, tolerance=0):
    """Per image, whether the map's peak lies in its box (Zhang et al. 2016's pointing game).

    maps: (B, H, W); boxes: (B, 4) as (row, col, height, width) in pixels; `tolerance` grows each box
    by that many pixels on every side. A Grad-CAM map upsampled from an s-pixel feature grid can only
    place its peak to within s / 2, so that is the fair tolerance for it. Returns (B,) bool.
    """
    maps, boxes = np.asarray(maps), np.asarray(boxes)
    if maps.ndim != 3 or boxes.shape != (len(maps), 4):
        raise ValueError(f"pointing_game: expected maps (B, H, W) and boxes (B, 4), got {maps.shape} and {boxes.shape}")
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    rows, cols = np.unravel_index(flat, maps.shape[1:])
    r, c, h, w = boxes.T
    return ((r - tolerance <= rows) & (rows < r + h + tolerance) & (c - tolerance <= cols) & (cols < c + w + tolerance))


def rank_correlation(maps_a, maps_b):
    """Per image, the Spearman rank correlation of two explanations of it (B,): the measure of
    Adebayo et al. 2018's model-randomisation check. NaN where either map is constant (no ranking)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(maps_a), np.asarray(maps_b)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"rank_correlation: expected two (B, ...) arrays of one shape, got {a.shape} and {b.shape}")
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1))):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = spearmanr(x, y)[0]
    return out
