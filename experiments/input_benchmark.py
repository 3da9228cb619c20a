"""Peak memory and throughput of the in-memory and streaming input paths as the data grows.

  python -m experiments.input_benchmark --scales 1,4,16 --base 500 --image_size 64 --out runs/input.json

Writes a synthetic two-modality dataset of class folders (JPEGs of --source_size pixels, --base
images per modality at scale 1, seeded) into --work (a temporary folder by default, removed after),
then, for every scale and path, runs one child process that loads the data and trains --steps steps
of --model on it (after --warmup), and reports the child's peak RSS after loading the data (before
any model exists) and at the end, its load time, the training pairs/s and the input pipeline's own
pairs/s. JSON to --out and a markdown table beside it.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import THREADS, check_ranges, define_shared, number_list, refusing, with_threads  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("scales", ["1", "4", "16"], "Dataset sizes, as multiples of --base.")
flags.DEFINE_integer("base", 500, "Images per modality at scale 1 (at least 40: every class needs validation and test images).")
flags.DEFINE_integer("source_size", 256, "Side of the synthetic JPEG files.")
define_shared(__name__, image_size=64, batch_size=32, seed=(0, "Seed of the synthetic images."),
              out=(None, "Write the results as JSON here (and a .md table beside it)."),
              model=("mail_rn18", "Model preset trained in the measurement; none: the input path alone."),
              warmup=(5, "Untimed steps (tracing) before timing."), steps=(30, "Timed training steps."), **THREADS)
flags.DEFINE_integer("pipeline_batches", 100, "Batches timed of the input pipeline alone.")
flags.DEFINE_string("work", None, "Folder for the synthetic files (default: a temporary one, removed after).")
flags.DEFINE_string("child", None, "Internal: run one measurement 'SPEC|streaming'.")


def write_dataset(root, count, size, seed):
    """Two modalities of `count` JPEGs each, 2 and 3 classes, smooth random images (JPEG sizes of real ones)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for modality, classes in (("a", 2), ("b", 3)):
        for i in range(count):
            folder = root / modality / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
            noise = rng.integers(-12, 13, (size, size, 3))
            pixels = np.clip(np.asarray(image, np.int64) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def measure(spec, streaming):
    """In this (child) process: load, time the pipeline alone, then training steps."""
    import keras
    import tensorflow as tf

    from mail_tf import build_model
    from mail_tf.data import load_experiment, train_dataset
    from mail_tf.training import make_train_step
    from mail_tf.training.optimizers import Adam

    start = time.perf_counter()
    modalities = load_experiment(spec, FLAGS.image_size, seed=0, streaming=streaming)
    load_s = time.perf_counter() - start
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # before any model exists
    ds = train_dataset(modalities, FLAGS.batch_size, seed=0, paper_augment=False, random_augment=True).repeat()
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(FLAGS.pipeline_batches):
        next(it)
    pipeline = FLAGS.batch_size * FLAGS.pipeline_batches / (time.perf_counter() - start)
    result = {"load_s": load_s, "peak_rss_after_load_mb": loaded_rss, "pipeline_pairs_per_s": pipeline}
    if FLAGS.model == "none":          # the input path alone: its memory is not hidden behind a model's
        return {**result, "train_pairs_per_s": None,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    keras.utils.set_random_seed(0)
    model = build_model(FLAGS.model, {m.task: m.num_classes for m in modalities},
                        input_shape=(FLAGS.image_size, FLAGS.image_size, 3))
    step = make_train_step(model, Adam(1e-3))
    for _ in range(FLAGS.warmup):
        step(*next(it))
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        out = step(*next(it))
    tf.nest.map_structure(lambda t: t.numpy(), out)
    train = FLAGS.batch_size * FLAGS.steps / (time.perf_counter() - start)
    return {**result, "train_pairs_per_s": train, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(results):
    lines = ["| scale | images per modality | path | peak RSS after loading (MB) | peak RSS (MB) | load (s) | "
             "train pairs/s | pipeline pairs/s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        loaded = f"{r['peak_rss_after_load_mb']:.0f}" if "peak_rss_after_load_mb" in r else "-"
        train = "-" if r["train_pairs_per_s"] is None else f"{r['train_pairs_per_s']:.1f}"
        lines.append(f"| {r['scale']}x | {r['images']:,} | {r['path']} | {loaded} | {r['peak_rss_mb']:.0f} | "
                     f"{r['load_s']:.1f} | {train} | {r['pipeline_pairs_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if FLAGS.child:
        spec, streaming = FLAGS.child.split("|")
        print(json.dumps(measure(spec, streaming)))
        return
    with refusing():
        check_ranges(FLAGS, {"base": (40, None), "source_size": (8, None), "image_size": (32, None),
                             "batch_size": (1, None), "warmup": (1, None), "steps": (1, None),
                             "pipeline_batches": (1, None), "seed": (0, None)})
        scales = number_list("--scales", FLAGS.scales, int, lambda s: s >= 1, "whole numbers >= 1")
    work = Path(FLAGS.work or tempfile.mkdtemp(prefix="mail_tf_input_"))
    results = []
    try:
        for scale in scales:
            root = work / f"x{scale}"
            count = FLAGS.base * scale
            if not (root / "b").is_dir():
                print(f"writing {2 * count:,} synthetic JPEGs ({scale}x) into {root} ...", file=sys.stderr, flush=True)
                write_dataset(root, count, FLAGS.source_size, FLAGS.seed)
            spec = f"folder:a={root / 'a'},folder:b={root / 'b'}"
            for path in ("off", "on"):
                child = [sys.executable, "-m", "experiments.input_benchmark", f"--child={spec}|{path}",
                         *[f"--{k}={getattr(FLAGS, k)}" for k in ("image_size", "batch_size", "model", "warmup",
                                                                  "steps", "pipeline_batches")]]
                print(f"[{scale}x, {'streaming' if path == 'on' else 'in memory'}] measuring ...", file=sys.stderr,
                      flush=True)
                proc = subprocess.run(child, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"error: the measurement failed:\n{proc.stderr[-2000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append({"scale": scale, "images": count, "path": "streaming" if path == "on" else "in memory",
                                **row})
                print(f"  peak RSS {row['peak_rss_mb']:.0f} MB, train {row['train_pairs_per_s']} pairs/s, "
                      f"pipeline {row['pipeline_pairs_per_s']:.0f} pairs/s", file=sys.stderr, flush=True)
    finally:
        if not FLAGS.work:
            shutil.rmtree(work, ignore_errors=True)
    report = table(results)
    print(report)
    if FLAGS.out:
        out = Path(FLAGS.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"settings": {k: getattr(FLAGS, k) for k in ("base", "source_size", "image_size",
                                                                                 "batch_size", "model", "steps")},
                                   "results": results}, indent=2) + "\n")
        out.with_suffix(".md").write_text(report)
        print(f"wrote {out}")


if __name__ == "__main__":
    app.run(with_threads(main))
