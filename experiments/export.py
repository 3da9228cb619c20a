"""Export a trained run for a device: LiteRT (.tflite) float32, float16, dynamic-range or int8.

  python -m experiments.export --run RUN_DIR --quantize int8 --out mail.tflite
  python -m experiments.export --run RUN_DIR --quantize none,float16,dynamic,int8 --out lite/ --report

One quantisation: --out is the file. Several: --out is a folder, one `<run>-<quantize>.tflite` each.
Beside every file, its metadata (`.json`: tasks, class names, inputs, what was fixed). int8 is
calibrated on --num_calibration training pairs of the run's own split (seeded, no augmentation).
--report measures each file against the Keras model on the run's test split: file size, single-pair
latency (median of --repeats runs, --threads threads), accuracy / macro-F1 / AUC per task, and the
largest |logit difference|; written as lite_report.json and .md beside the files.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from experiments.cli import THREADS, check_ranges, define_shared, no_arguments, refusing, with_threads  # noqa: E402

FLAGS = flags.FLAGS
define_shared(__name__, run=None, out=(None, "Output .tflite file (one quantisation) or folder (several)."),
              seed=(0, "Seed of the calibration pairs."), batch_size=(64, "Report: pairs per batch when scoring."),
              repeats=(50, "Report: single-pair runs for the median latency."),
              num_samples=(None, "Report: score at most this many test pairs per task (default: all)."), **THREADS)
flags.DEFINE_enum("format", "tflite", ["tflite"], "Export format (LiteRT).")
flags.DEFINE_list("quantize", ["none"], "Comma-separated, of none (float32), float16, dynamic (int8 weights), "
                  "int8 (full-integer, calibrated on training pairs; one weight scale per output channel where "
                  "a kernel's channels differ in range, else one per kernel: see --per_tensor_tolerance), "
                  "int8_per_tensor (one scale per kernel everywhere: smallest, least exact).")
flags.DEFINE_float("per_tensor_tolerance", 0.02, "int8: a kernel takes one weight scale when its channels' mean "
                   "relative RMS weight error under it is at most this; 0 keeps every per-channel scale.")
flags.DEFINE_integer("num_calibration", 256, "int8: training pairs for calibration.")
flags.DEFINE_bool("report", False, "Measure size, latency, accuracy and logit error of each file on the test split.")
flags.DEFINE_integer("threads", 1, "Report: LiteRT interpreter threads (Keras's baseline uses TensorFlow's default).")


def outputs(out, run, kinds):
    out = Path(out)
    if len(kinds) == 1 and out.suffix == ".tflite":
        return {kinds[0]: out}
    if out.suffix:
        raise ValueError(f"--out={out}: with several quantisations, expected an --out folder (got a file name)")
    return {k: out / f"{Path(run).name}-{k}.tflite" for k in kinds}


def calibration_pairs(modalities, n, seed):
    """n training pairs as [[modality batches]], unaugmented, in a seeded order."""
    from mail_tf.data import train_dataset

    batches, count = [], 0
    for images, _ in train_dataset(modalities, 32, seed=seed, paper_augment=False):
        batches.append([x.numpy() for x in images])
        count += len(batches[-1][0])
        if count >= n:
            break
    return batches


def median_latency(fn, repeats):
    fn()   # warm-up (and, for Keras, tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def scores(logits, labels):
    from mail_tf.lite import softmax
    from mail_tf.training.metrics import classification_metrics

    return classification_metrics(labels, softmax(logits))


def report(model, files, modalities, config):
    """{"keras": {...}, quantize: {...}} measured on the test split."""
    import numpy as np
    import tensorflow as tf

    from mail_tf.data import eval_datasets
    from mail_tf.lite import LiteModel

    data = eval_datasets(modalities, "test", FLAGS.batch_size, config.seed)
    keras_fn = tf.function(lambda xs: model(xs, training=False))
    runners = {k: LiteModel(path, num_threads=FLAGS.threads) for k, path in files.items()}
    results = {"keras": {"bytes": None, "tasks": {}}, **{k: {"bytes": r.size, "tasks": {}, "max_abs_logit_diff": 0.0}
                                                         for k, r in runners.items()}}
    first = None
    for task, dataset in data.items():
        ref, lite, labels = [], {k: [] for k in runners}, []
        for images, y in dataset:
            images = [x.numpy() for x in images]
            if first is None:
                first = [x[:1] for x in images]
            ref.append(keras_fn([tf.constant(x) for x in images])[task].numpy())
            for k, r in runners.items():
                lite[k].append(r(images)[task])
            labels.append(y[task].numpy())
            if FLAGS.num_samples and sum(len(v) for v in labels) >= FLAGS.num_samples:
                break
        n = FLAGS.num_samples or None
        labels, ref = np.concatenate(labels)[:n], np.concatenate(ref)[:n]
        results["keras"]["tasks"][task] = scores(ref, labels)
        for k in runners:
            out = np.concatenate(lite[k])[:n]
            results[k]["tasks"][task] = scores(out, labels)
            results[k]["max_abs_logit_diff"] = max(results[k]["max_abs_logit_diff"], float(np.abs(out - ref).max()))
    pair = [tf.constant(x) for x in first]
    results["keras"]["latency_ms"] = 1e3 * median_latency(lambda: keras_fn(pair), FLAGS.repeats)
    for k, r in runners.items():
        results[k]["latency_ms"] = 1e3 * median_latency(lambda: r(first), FLAGS.repeats)
        results[k]["delegate"] = r.delegate
    return results


def markdown(results, run, threads):
    tasks = list(results["keras"]["tasks"])
    head = "| format | size (MB) | latency, 1 pair (ms) | max abs logit diff | " + " | ".join(
        f"{t} ACC / F1 / AUC" for t in tasks) + " |"
    lines = [f"# LiteRT export of {run}", "", f"Interpreter threads: {threads}; latency: median single-pair call.", "",
             head, "|" + "---|" * (4 + len(tasks))]
    for k, r in results.items():
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 1e6:.2f}"
        diff = "-" if k == "keras" else f"{r['max_abs_logit_diff']:.2e}"
        cells = [f"{m['accuracy']:.3f} / {m['macro_f1']:.3f} / " + ("-" if m["auc"] is None else f"{m['auc']:.3f}")
                 for m in r["tasks"].values()]
        name = "Keras (float32)" if k == "keras" else f"{k}" + ("" if r.get("delegate") == "XNNPACK" else " (no XNNPACK)")
        lines.append(f"| {name} | {size} | {r['latency_ms']:.1f} | {diff} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    logging.set_verbosity(logging.WARNING)
    no_arguments(argv)
    with refusing():
        if not FLAGS.run:
            raise ValueError("--run is required (a run directory of experiments.train)")
        if not FLAGS.out:
            raise ValueError("--out is required (a .tflite file, or a folder for several quantisations)")
        from mail_tf.lite import FULL_INTEGER, QUANTIZATIONS

        kinds = list(dict.fromkeys(FLAGS.quantize))
        bad = [k for k in kinds if k not in QUANTIZATIONS]
        if bad or not kinds:
            raise ValueError(f"--quantize={','.join(FLAGS.quantize)}: expected a comma-separated list of "
                             f"{', '.join(QUANTIZATIONS)}")
        check_ranges(FLAGS, {"num_calibration": (1, None), "seed": (0, None), "threads": (1, None),
                             "repeats": (1, None), "num_samples": (1, None), "batch_size": (1, None)})
        if not FLAGS.per_tensor_tolerance >= 0:
            raise ValueError(f"--per_tensor_tolerance={FLAGS.per_tensor_tolerance}: expected a number >= 0")
        files = outputs(FLAGS.out, FLAGS.run, kinds)

    from mail_tf import data as mdata
    from mail_tf.export import METADATA
    from mail_tf.lite import export_tflite
    from mail_tf.training.run_dir import RunDir

    serving = Path(FLAGS.run) / "export" / METADATA      # class names without loading the data
    with refusing(FileNotFoundError, mdata.DataError):
        run = RunDir(FLAGS.run)
        model, config = run.load_model(), run.config
        modalities = None
        if set(kinds) & set(FULL_INTEGER) or FLAGS.report or not serving.exists():
            modalities = run.load_data()
    class_names = (json.loads(serving.read_text())["class_names"] if serving.exists()
                   else {m.task: m.class_names for m in modalities})
    for kind, path in files.items():
        start = time.time()
        print(f"converting ({kind}) ...", flush=True)
        representative = calibration_pairs(modalities, FLAGS.num_calibration, FLAGS.seed) if kind in FULL_INTEGER else None
        meta = export_tflite(model, path, class_names, config.image_size, kind, representative,
                             FLAGS.per_tensor_tolerance)
        fixed = f"; {', '.join(meta['fixed'])} (a fixed member of the randomised model)" if meta["fixed"] else ""
        print(f"  {path}: {meta['bytes'] / 1e6:.2f} MB in {time.time() - start:.0f} s{fixed}", flush=True)
    if FLAGS.report:
        print(f"measuring on the test split ({FLAGS.threads} thread(s)) ...", flush=True)
        results = report(model, files, modalities, config)
        folder = next(iter(files.values())).parent
        (folder / "lite_report.json").write_text(json.dumps({"run": str(FLAGS.run), "threads": FLAGS.threads,
                                                             "repeats": FLAGS.repeats, "formats": results}, indent=2) + "\n")
        table = markdown(results, FLAGS.run, FLAGS.threads)
        (folder / "lite_report.md").write_text(table)
        print(table)


if __name__ == "__main__":
    app.run(with_threads(main))
