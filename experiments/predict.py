"""Classify one image per modality with an exported model; print per-task probabilities as JSON.

  python -m experiments.predict --run runs/medmnist-mail_rn18-20261122-101500 breast.png chest.jpg

--run is a run directory (its export/ is used), an exported SavedModel directory, or a LiteRT
`.tflite` file of experiments.export (its `.json` metadata beside it). Images are given in the
model's modality order (see its mail_tf_serving.json or .json), any size, grey or colour. The
output is the same for all three. Only TensorFlow is needed: the SavedModel carries the network and
its preprocessing; a .tflite file gets the same preprocessing here.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import THREADS, define_shared, refusing, with_threads  # noqa: E402

FLAGS = flags.FLAGS
define_shared(__name__, run=(None, "Run directory, exported SavedModel directory or .tflite file."),
              top=(0, "Print only the top-k classes per task (0: all)."), **THREADS)
flags.DEFINE_alias("model", "run")      # the spelling before --run; a preset name is --model elsewhere
flags.DEFINE_integer("passes", 1, "Average this many stochastic passes (randomised models such as "
                     "Robust-MAIL) and print the spread of each probability.")

METADATA = "mail_tf_serving.json"


def find_export(path):
    path = Path(path)
    for candidate in (path, path / "export"):
        if (candidate / "saved_model.pb").exists():
            return candidate
    raise FileNotFoundError(f"--run {path}: no saved_model.pb in it or in its export/ folder; expected a "
                            f"run directory of experiments.train or an exported SavedModel")


def read_image(path):
    """An image file -> (1, H, W, C) uint8 tensor (its own channels: the SavedModel converts them)."""
    from mail_tf.data.images import decode_bytes

    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path}: no such file")
    return decode_bytes(Path(path).read_bytes(), f"image {path}")[None]


def ranked(tasks, image_paths, class_names, probabilities, top):
    """{task: {image, class, probabilities}} from {task: (1, K) probabilities}."""
    out = {}
    for task, path in zip(tasks, image_paths):
        p = [float(v) for v in probabilities[task][0]]
        order = sorted(zip(class_names[task], p), key=lambda item: -item[1])
        out[task] = {"image": str(path), "class": order[0][0], "probabilities": dict(order[:top] if top else order)}
    return out


def predict_lite(path, image_paths, top=0):
    """As `predict`, for a .tflite file: the serving preprocessing, then the LiteRT interpreter."""
    from mail_tf.export import serving_inputs
    from mail_tf.lite import LiteModel, softmax

    if not Path(path).is_file():
        raise FileNotFoundError(f"--run {path}: no such file")
    model = LiteModel(path)
    if not model.meta:
        raise FileNotFoundError(f"--run {path}: its metadata {Path(path).with_suffix('.json')} is missing; "
                                "it is written by experiments.export")
    tasks = model.meta["tasks"]
    if len(image_paths) != len(model.input_names):
        raise ValueError(f"the model takes {len(model.input_names)} images, one per modality in the order "
                         f"{', '.join(tasks)}; got {len(image_paths)}")
    images = [read_image(p) for p in image_paths]
    x = [v.numpy() for v in serving_inputs(images, model.meta["image_size"], model.input_names)]
    probabilities = {t: softmax(v) for t, v in model(x).items()}
    return ranked(tasks, image_paths, model.meta["class_names"], probabilities, top)


def predict(export_dir, image_paths, top=0, passes=1):
    """{task: {image, class, probabilities}} for one image per modality."""
    import tensorflow as tf

    meta_path = export_dir / METADATA
    if not meta_path.exists():
        raise FileNotFoundError(f"--run {export_dir}: {METADATA} is missing; it is written by mail_tf's export")
    meta = json.loads(meta_path.read_text())
    inputs, tasks = meta["inputs"], meta["tasks"]
    if len(image_paths) != len(inputs):
        raise ValueError(f"the model takes {len(inputs)} images, one per modality in the order "
                         f"{', '.join(tasks)}; got {len(image_paths)}")
    images = [read_image(p) for p in image_paths]
    if passes < 1:
        raise ValueError(f"--passes={passes}: expected at least 1")
    loaded = tf.saved_model.load(str(export_dir))
    if passes > 1:
        if not hasattr(loaded, "serve_passes"):
            raise ValueError(f"--passes: the model in {export_dir} was exported without serve_passes; re-export it")
        probabilities = loaded.serve_passes(*images, tf.constant(passes, tf.int32))
    else:
        probabilities = loaded.serve(*images)
    out = ranked(tasks, image_paths, meta["class_names"], {t: probabilities[t].numpy() for t in tasks}, top)
    if passes > 1:
        for task in tasks:
            spread = dict(zip(meta["class_names"][task], probabilities[f"{task}_std"].numpy()[0].tolist()))
            out[task]["std"] = {name: spread[name] for name in out[task]["probabilities"]}
            out[task]["passes"] = passes
    return out


def main(argv):
    if not FLAGS.run:
        sys.exit("error: --run is required (a run directory, an exported SavedModel or a .tflite file)")
    if FLAGS.top < 0:
        sys.exit(f"error: --top={FLAGS.top}: expected 0 (every class) or a positive number of classes")
    if FLAGS.passes < 1:
        sys.exit(f"error: --passes={FLAGS.passes}: expected at least 1")
    with refusing(FileNotFoundError):
        if FLAGS.run.endswith(".tflite"):
            if FLAGS.passes > 1:
                raise ValueError("--passes: a .tflite file is the deterministic export (one fixed draw); use the "
                                 "SavedModel for stochastic passes")
            result = predict_lite(FLAGS.run, argv[1:], FLAGS.top)
        else:
            result = predict(find_export(FLAGS.run), argv[1:], FLAGS.top, FLAGS.passes)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(with_threads(main))
