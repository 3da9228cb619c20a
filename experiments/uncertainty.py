"""Monte-Carlo uncertainty of a trained run, or of several runs as an ensemble.

  python -m experiments.uncertainty --runs runs/a                       # MC dropout, 30 passes, test
  python -m experiments.uncertainty --runs runs/a,runs/b,runs/c --passes 10 --split val

Each member is rebuilt from its run directory with its dropout kept active at inference (and BN in
inference mode) and loaded with its best weights; T stochastic passes per member are pooled. Per
task: accuracy of the mean prediction, predictive entropy, expected entropy, mutual information,
per-class variance, ECE (equal-width bins), NLL and Brier score; a reliability diagram; the most and
least certain items (by predictive entropy). Written to uncertainty.json and reliability.png.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import THREADS, check_ranges, define_shared, no_arguments, refusing, with_threads  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "Run directories of experiments.train (several: an ensemble).")
flags.DEFINE_integer("passes", 30, "Stochastic passes per member.")
define_shared(__name__, split=("test", "Split to evaluate."), batch_size=64, seed=(0, "Seed of the dropout masks."),
              out=(None, "Folder to write to (default <first run>/uncertainty-<split>)."),
              top=(10, "How many most and least certain items to list per task."), **THREADS)
flags.DEFINE_integer("bins", 15, "Confidence bins of ECE and the reliability diagram.")
flags.DEFINE_alias("output_dir", "out")     # the spelling before --out


def load_member(path, modalities=None):
    """(config, model with active dropout and best weights, modalities) of one run directory."""
    from mail_tf.training.run_dir import RunDir

    run = RunDir(path, "--runs", needs=("best.weights.h5",))
    modalities = modalities or run.load_data()
    # The run's own model_options (fusion, man, rpf_ratio, ...), with dropout kept on at inference.
    return run.config, run.rebuild({m.task: m.num_classes for m in modalities}, mc_dropout=True), modalities


def mc_samples(model, modalities, split, passes, batch_size, seed):
    """{task: (samples (passes, N, K), labels (N,))} over every item of `split`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mail_tf.data import eval_datasets
    from mail_tf.training import make_predict_fn

    predict = make_predict_fn(model)
    keras.utils.set_random_seed(seed)
    out = {}
    for task, ds in eval_datasets(modalities, split, batch_size, seed=0).items():
        batches = list(ds)
        labels = np.concatenate([y[task].numpy() for _, y in batches])
        rows = []
        bar = keras.utils.Progbar(passes, unit_name="pass", interval=0.5 if sys.stdout.isatty() else 30)
        for t in range(passes):
            rows.append(np.concatenate([tf.nn.softmax(tf.cast(predict(x)[task], tf.float32)).numpy()
                                        for x, _ in batches]))
            bar.update(t + 1)
        out[task] = (np.stack(rows), labels)
    return out


def main(argv):
    no_arguments(argv)
    if not FLAGS.runs:
        sys.exit("error: --runs is required: one or more run directories of experiments.train, comma-separated")
    with refusing():
        check_ranges(FLAGS, {"passes": (1, None), "batch_size": (1, None), "bins": (1, None), "top": (0, None),
                             "seed": (0, None)})
    import numpy as np

    from mail_tf.data import DataError
    from mail_tf.uncertainty import plot_reliability, summarize

    start = time.time()
    pooled, modalities, first = {}, None, None
    with refusing(FileNotFoundError, DataError):
        for i, run in enumerate(FLAGS.runs):
            print(f"member {i + 1}/{len(FLAGS.runs)}: {run}", flush=True)
            config, model, modalities = load_member(run, modalities)
            if first is not None and (config.dataset, config.image_size) != first:
                raise ValueError(f"--runs {run}: trained on {config.dataset} at {config.image_size}px, the first "
                                 f"member on {first[0]} at {first[1]}px; an ensemble needs the same data")
            first = (config.dataset, config.image_size)
            for task, (samples, labels) in mc_samples(model, modalities, FLAGS.split, FLAGS.passes,
                                                      FLAGS.batch_size, FLAGS.seed + i).items():
                pooled.setdefault(task, ([], labels))[0].append(samples)

    out = Path(FLAGS.out or Path(FLAGS.runs[0]) / f"uncertainty-{FLAGS.split}")
    out.mkdir(parents=True, exist_ok=True)
    report, diagrams = {"runs": FLAGS.runs, "split": FLAGS.split, "passes_per_member": FLAGS.passes,
                        "bins": FLAGS.bins, "seed": FLAGS.seed, "tasks": {}}, {}
    manifests = {m.task: m for m in modalities}
    print(f"\n{'task':18} {'n':>5} {'acc':>6} {'H[p]':>6} {'E[H]':>6} {'MI':>6} {'ECE':>6} {'NLL':>6} {'Brier':>6}")
    for task, (members, labels) in pooled.items():
        samples = np.concatenate(members)
        mean, per_item, aggregate = summarize(samples, labels, FLAGS.bins)
        ids = manifests[task].manifest[FLAGS.split]
        order = np.argsort(per_item["predictive_entropy"], kind="stable")
        names = manifests[task].class_names

        def item(i):
            return {"id": ids[i], "label": names[labels[i]], "prediction": names[int(mean[i].argmax())],
                    "confidence": float(mean[i].max()),
                    "predictive_entropy": float(per_item["predictive_entropy"][i]),
                    "mutual_information": float(per_item["mutual_information"][i])}

        aggregate["most_certain"] = [item(i) for i in order[:FLAGS.top]]
        aggregate["least_certain"] = [item(i) for i in order[::-1][:FLAGS.top]]
        aggregate["class_names"] = names
        report["tasks"][task] = aggregate
        diagrams[task] = (mean, labels, aggregate["ece"])
        a = aggregate
        print(f"{task:18} {a['count']:5d} {a['accuracy']:6.3f} {a['predictive_entropy']:6.3f} "
              f"{a['expected_entropy']:6.3f} {a['mutual_information']:6.3f} {a['ece']:6.3f} {a['nll']:6.3f} "
              f"{a['brier']:6.3f}")
    (out / "uncertainty.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_reliability(diagrams, out / "reliability.png", FLAGS.bins)
    print(f"\n{out / 'uncertainty.json'}, {out / 'reliability.png'}  ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    app.run(with_threads(main))
