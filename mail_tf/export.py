"""Export for serving: a SavedModel taking images of any size, returning probabilities.

The serving endpoint takes one batch per modality, named `<task>_image`, of shape
(batch, height, width, channels) with any height/width and 1, 3 or 4 channels, either all uint8 in
[0, 255] or all float32 in [0, 1] (quantised to 8 bits, as the training images are); any other
dtype is refused by the SavedModel, a float outside [0, 1], an empty batch or modalities with
different batch sizes by a check naming it. It converts, resizes and scales them exactly as
training did and returns `{task: probabilities}`. It loads
with plain `tf.saved_model.load(path).serve(...)`, without mail_tf. `mail_tf_serving.json` beside
it names the tasks, their class names and the image size.

Randomised models keep their inference-phase randomness: every call of `serve` draws new random
projection filters ([I]) and fresh attention noise. `serve_passes(images..., passes)` averages
`passes` such stochastic passes and returns `{task: mean probabilities, task_std: their spread}`
(zero spread for a deterministic model).
"""

import json
from pathlib import Path

import keras
import tensorflow as tf

from mail_tf.data.images import to_rgb_uint8
from mail_tf.layers.random_projection import redraw_random_filters

METADATA = "mail_tf_serving.json"


DTYPES = (tf.uint8, tf.float32)     # one concrete function per dtype; nothing is cast silently


def checked_uint8(images, names):
    """The batches as uint8, after checking what a cast would hide: sizes and the float range."""
    batch = tf.shape(images[0])[0]
    checks = [tf.debugging.assert_positive(batch, message=f"{names[0]}: empty batch; expected at least one image")]
    for x, name in zip(images[1:], names[1:]):
        checks.append(tf.debugging.assert_equal(
            tf.shape(x)[0], batch, message=f"{name}: batch size differs from {names[0]}'s; every modality "
                                           "needs one image per sample"))
    out = []
    for x, name in zip(images, names):
        checks.append(tf.debugging.assert_less_equal(
            tf.shape(x)[-1], 4, message=f"{name}: expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels"))
        if x.dtype == tf.float32:
            inside = tf.reduce_all((x >= 0.0) & (x <= 1.0))     # NaN is outside too
            checks.append(tf.debugging.Assert(inside, [f"{name}: float32 images must be in [0, 1]"]))
            x = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
        out.append(x)
    with tf.control_dependencies(checks):
        return [tf.identity(x) for x in out]


def serving_inputs(images, image_size, names=None):
    """uint8 [0, 255] or float32 [0, 1] images of any size -> float [0, 1] model inputs (the
    training preprocessing)."""
    names = names or [f"image {i}" for i in range(len(images))]
    return [tf.cast(to_rgb_uint8(x, image_size), tf.float32) / 255.0 for x in checked_uint8(images, names)]


def export_serving(model, path, class_names, image_size):
    """Write the SavedModel and its metadata. class_names: {task: [names]} in output order."""
    tasks = list(class_names)
    input_names = [f"{t}_image" for t in tasks]

    def probabilities(x):
        redraw_random_filters(model)            # no-op for a model without random projection filters
        logits = model(x, training=False)
        return {t: tf.nn.softmax(tf.cast(logits[t], tf.float32)) for t in tasks}

    @tf.function
    def serve(*images):
        return probabilities(serving_inputs(images, image_size, input_names))

    @tf.function
    def serve_passes(*args):
        *images, passes = args
        check = tf.debugging.assert_positive(passes, message="serve_passes: passes must be at least 1")
        with tf.control_dependencies([check]):
            passes = tf.identity(passes)
        x = serving_inputs(images, image_size, input_names)
        zeros = {t: tf.zeros([tf.shape(x[0])[0], len(class_names[t])]) for t in tasks}

        def one_pass(i, mean, m2):
            # Welford's update: a constant sequence gives exactly zero spread.
            p, n = probabilities(x), tf.cast(i + 1, tf.float32)
            new_mean = {t: mean[t] + (p[t] - mean[t]) / n for t in tasks}
            return i + 1, new_mean, {t: m2[t] + (p[t] - mean[t]) * (p[t] - new_mean[t]) for t in tasks}

        # An explicit while loop: the export traces without AutoGraph.
        _, mean, m2 = tf.while_loop(lambda i, *_: i < passes, one_pass, (tf.constant(0), zeros, zeros))
        n = tf.cast(tf.maximum(passes, 1), tf.float32)
        out = {}
        for t in tasks:
            out[t] = mean[t]
            out[f"{t}_std"] = tf.sqrt(tf.maximum(m2[t] / n, 0.0))
        return out

    for dtype in DTYPES:
        specs = [tf.TensorSpec([None, None, None, None], dtype, name=n) for n in input_names]
        serve.get_concrete_function(*specs)
        serve_passes.get_concrete_function(*specs, tf.TensorSpec([], tf.int32, name="passes"))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)               # every traced dtype
    archive.add_endpoint("serve_passes", serve_passes)
    archive.write_out(str(path), verbose=False)
    meta = {"tasks": tasks, "inputs": input_names, "class_names": class_names, "image_size": image_size,
            "input": "(batch, height, width, channels), any size, 1/3/4 channels: all uint8 in [0, 255] or "
                     "all float32 in [0, 1]",
            "output": "per-task softmax probabilities",
            "serve_passes": "mean and std (task_std) of the probabilities over `passes` stochastic passes"}
    (Path(path) / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
