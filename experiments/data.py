"""Load an experiment's datasets, write the split manifest, report counts and pipeline speed.

  python -m experiments.data --dataset medmnist
  python -m experiments.data --dataset "ham10000=/data/HAM10000,folder:xray=/data/my_xrays" \
      --image_size 128 --out runs/data_check

--dataset takes a named experiment or KIND[:OPTION]=ROOT,... (one entry per modality).
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import check_ranges, define_shared, refusing  # noqa: E402

FLAGS = flags.FLAGS
define_shared(__name__, dataset="medmnist", data_dir=None, image_size=(128, "Square size images are resized to."),
              batch_size=(32, "Pairs per batch for the throughput measurement."),
              seed=(0, "Seed of splits, pairing and shuffling."),
              out=(None, "Folder to write splits.json and data_report.json to."))
flags.DEFINE_string("manifest", None, "Reuse the splits of this split manifest (splits.json).")
flags.DEFINE_bool("skip_bad_images", False, "Skip unreadable images (listed on stderr) instead of failing.")
flags.DEFINE_bool("paper_augment", True, "Add the paper's three augmented copies per training image.")
flags.DEFINE_bool("random_augment", False, "Random rotation/translation on the fly.")
flags.DEFINE_integer("batches", 50, "Batches to time (0: skip the measurement).")
flags.DEFINE_alias("output_dir", "out")     # the spelling before --out


def measure(dataset, batches):
    """Pairs per second of a training pipeline, after one warm-up batch."""
    it = iter(dataset)
    next(it)
    start, pairs = time.perf_counter(), 0
    for _ in range(batches):
        try:
            xs, _ = next(it)
        except StopIteration:
            break
        pairs += int(xs[0].shape[0])
    return pairs / (time.perf_counter() - start)


def main(argv):
    del argv
    with refusing():
        check_ranges(FLAGS, {"image_size": (1, None), "batch_size": (1, None), "seed": (0, None), "batches": (0, None)})
    import numpy as np

    from mail_tf import data

    with refusing(data.DataError):
        manifest = data.read_manifest(FLAGS.manifest) if FLAGS.manifest else None
        start = time.perf_counter()
        mods = data.load_experiment(FLAGS.dataset, FLAGS.image_size, FLAGS.seed, FLAGS.data_dir, manifest,
                                    FLAGS.skip_bad_images, manifest_name=f"--manifest {FLAGS.manifest}")
        load_s = time.perf_counter() - start
    report = {"dataset": FLAGS.dataset, "image_size": FLAGS.image_size, "seed": FLAGS.seed,
              "load_seconds": load_s, "tasks": {}}
    for m in mods:
        report["tasks"][m.task] = {
            "classes": m.class_names,
            "counts": {s: dict(zip(m.class_names, np.bincount(y, minlength=m.num_classes).tolist()))
                       for s, y in m.labels.items()}}
        sizes = ", ".join(f"{s} {len(y)}" for s, y in m.labels.items())
        print(f"{m.task}: {m.num_classes} classes; {sizes}")
    if FLAGS.batches:
        ds = data.train_dataset(mods, FLAGS.batch_size, FLAGS.seed, FLAGS.paper_augment, FLAGS.random_augment)
        pairs_per_s = measure(ds, FLAGS.batches)
        report["train_pipeline_pairs_per_s"] = pairs_per_s
        report["train_pipeline_images_per_s"] = pairs_per_s * len(mods)
        print(f"training pipeline: {pairs_per_s:.0f} pairs/s ({pairs_per_s * len(mods):.0f} images/s decoded "
              f"from memory, augmented, batched) at {FLAGS.image_size}x{FLAGS.image_size}")
    if FLAGS.out:
        os.makedirs(FLAGS.out, exist_ok=True)
        data.write_manifest(os.path.join(FLAGS.out, "splits.json"), data.manifests(mods))
        with open(os.path.join(FLAGS.out, "data_report.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {FLAGS.out}/splits.json and data_report.json")


if __name__ == "__main__":
    app.run(main)
