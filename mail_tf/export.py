"""Export for serving: a SavedModel taking uint8 images of any size, returning probabilities.

The serving signature takes one batch per modality, named `<task>_image`, uint8 of shape
(batch, height, width, channels) with any height/width and 1, 3 or 4 channels; it converts,
resizes and scales them exactly as training did and returns `{task: probabilities}`. It loads
with plain `tf.saved_model.load(path).serve(...)`, without mail_tf. `mail_tf_serving.json` beside
it names the tasks, their class names and the image size.
"""

import json
from pathlib import Path

import keras
import tensorflow as tf

from mail_tf.data.images import to_rgb_uint8

METADATA = "mail_tf_serving.json"


def serving_inputs(images, image_size):
    """uint8 images of any size -> float [0, 1] model inputs (the training preprocessing)."""
    return [tf.cast(to_rgb_uint8(x, image_size), tf.float32) / 255.0 for x in images]


def export_serving(model, path, class_names, image_size):
    """Write the SavedModel and its metadata. class_names: {task: [names]} in output order."""
    tasks = list(class_names)
    input_names = [f"{t}_image" for t in tasks]

    def serve(*images):
        logits = model(serving_inputs(images, image_size), training=False)
        return {t: tf.nn.softmax(tf.cast(logits[t], tf.float32)) for t in tasks}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[
        tf.TensorSpec([None, None, None, None], tf.uint8, name=n) for n in input_names])
    archive.write_out(str(path), verbose=False)
    meta = {"tasks": tasks, "inputs": input_names, "class_names": class_names, "image_size": image_size,
            "input": "uint8 (batch, height, width, channels), any size, 1/3/4 channels",
            "output": "per-task softmax probabilities"}
    (Path(path) / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
