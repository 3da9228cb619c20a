"""Trainability diagnostics at initialisation (docs/TRAINABILITY.md): attention-gate saturation per
gate kind and image size, and per-stage signal propagation, for MAIL, Robust-MAIL, DRIFA-Net and
the plain pair, each in its default form and in the forms it replaced.

  python -m experiments.trainability --out runs/trainability                  # embedded MedMNIST
  python -m experiments.trainability --dataset ham10000_brainmri --data_dir ../shared/data \\
      --sizes 32,64,128,224 --out runs/trainability
  python -m experiments.trainability --run runs/x --out runs/x/trainability   # a trained run

Writes saturation.json and signal.json (and saturation.png) into --out.
"""

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import THREADS, define_shared, number_list, refusing, with_threads  # noqa: E402
from mail_tf.figures import pyplot, save_figure  # noqa: E402

FLAGS = flags.FLAGS
define_shared(__name__, dataset=("medmnist", "Named experiment or KIND[:OPTION]=ROOT,... spec whose test images "
                                          "are fed to the models."),
              data_dir=None, models=["mail_rn18", "robust_mail", "drifa_net", "resnet18_pair"],
              run=(None, "Measure this trained run directory's model instead of fresh presets."),
              seed=(0, "Seed of the initialisation and of the image sample."), out=("runs/trainability", "Output folder."),
              **THREADS)
flags.DEFINE_integer("num", 32, "Test images per modality (one batch).", lower_bound=2)
flags.DEFINE_list("sizes", ["32", "64", "128", "224"], "Image sizes to measure gate saturation at.")
flags.DEFINE_integer("signal_size", 64, "Image size of the signal-propagation measurement.", lower_bound=32)

# The forms each MAIL-family preset is measured in: today's default, its gates started neutral, and
# the notebook's form it replaced (global sum pool, Keras depth-wise init, no zero-init residual).
VARIANTS = {
    "default": {},
    "neutral": {"attention_init": "neutral"},
    "notebook": {"ca_pools": "notebook", "depthwise_init": "keras", "zero_init_residual": False},
}
MAIL_FAMILY = ("mail", "mail_rn18", "mail_rn50", "robust_mail")


def sample_images(dataset, data_dir, size, num, seed):
    """[(num, size, size, 3) float arrays in [0, 1]], one per modality, {task: labels} and
    {task: class count}: a seeded sample of each modality's test split, decoded at `size`."""
    import numpy as np

    from mail_tf.data import resolve_experiment
    from mail_tf.data.images import load_images
    from mail_tf.data.splits import make_splits

    images, labels, classes = [], {}, {}
    for spec in resolve_experiment(dataset):
        source = spec.load(data_dir)
        classes[spec.task] = len(source.class_names)
        test = make_splits(source, seed=seed)["test"]
        pick = np.sort(np.random.default_rng(seed).permutation(len(test))[:num])
        items = test.subset(pick)
        array, _ = load_images(items.images, size, label=f"{spec.task}/test")
        images.append(array.astype("float32") / 255.0)
        labels[spec.task] = items.labels
    return images, labels, classes


def saturation_plot(report, path):
    plt = pyplot()

    rows = [(model, variant) for model in report for variant in report[model]
            if any(per_size["by_kind"] for per_size in report[model][variant].values())]  # models with gates
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for ax, (model, variant) in zip(axes[:, 0], rows):
        per_size = report[model][variant]
        sizes = list(per_size)
        kinds = sorted({k for s in sizes for k in per_size[s]["by_kind"]})
        width = 0.8 / max(1, len(sizes))
        for j, size in enumerate(sizes):
            values = [100 * per_size[size]["by_kind"].get(k, 0.0) for k in kinds]
            ax.bar([i + j * width for i in range(len(kinds))], values, width, label=f"{size} px")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(kinds))], kinds, fontsize=7, rotation=15)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% saturated")
        ax.set_title(f"{model} ({variant})", fontsize=9)
        ax.legend(fontsize=7, ncol=len(sizes))
    save_figure(fig, path, dpi=110)


def measure(models, sizes, dataset, data_dir, num, signal_size, seed, log=print):
    """Saturation per model, variant and size; signal propagation per model and variant."""
    import keras

    import mail_tf
    from mail_tf.diagnostics import gate_saturation, saturation_by_kind, signal_propagation

    saturation, signal = {}, {}
    batches = {s: sample_images(dataset, data_dir, s, num, seed) for s in sorted(set(sizes) | {signal_size})}
    for model_name in models:
        variants = VARIANTS if model_name in MAIL_FAMILY else {"default": {}}
        saturation[model_name], signal[model_name] = {}, {}
        for variant, options in variants.items():
            per_size = {}
            for size in sizes:
                images, _, classes = batches[size]
                keras.utils.set_random_seed(seed)
                model = mail_tf.build_model(model_name, classes, input_shape=(size, size, 3), **options)
                rows = gate_saturation(model, images)
                per_size[size] = {"by_kind": saturation_by_kind(rows), "by_stage": _by_kind_and_stage(rows),
                                  "overall": (sum(r["saturated"] * _count(r) for r in rows)
                                              / max(1, sum(_count(r) for r in rows)))}
                log(f"{model_name:14} {variant:10} {size:4d} px: "
                    + ", ".join(f"{k} {100 * v:.0f}%" for k, v in per_size[size]["by_kind"].items()))
            saturation[model_name][variant] = per_size
            images, labels, classes = batches[signal_size]
            keras.utils.set_random_seed(seed)
            model = mail_tf.build_model(model_name, classes, input_shape=(signal_size, signal_size, 3), **options)
            signal[model_name][variant] = signal_propagation(model, images, labels)
            log(f"{model_name:14} {variant:10} signal at {signal_size} px: "
                + ", ".join(f"stage {r['stage']} rms {r['rms']:.3g} |g| {r['grad_norm']:.3g}"
                            for r in signal[model_name][variant]["stages"])
                + f"; head rms {signal[model_name][variant]['head_rms']:.3g}")
    return saturation, signal


def _by_kind_and_stage(rows):
    """{"kind@stage": mean saturated fraction}: where in the network a kind of gate saturates."""
    import numpy as np

    groups = {}
    for r in rows:
        groups.setdefault(f"{r['kind']}@{r['stage']}", []).append(r["saturated"])
    return {k: round(float(np.mean(v)), 4) for k, v in groups.items()}


def _count(row):
    return math.prod(row["shape"])


def main(argv):
    del argv
    with refusing():
        sizes = number_list("--sizes", FLAGS.sizes, int, lambda s: s >= 32, "image sizes >= 32")
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    if FLAGS.run:
        from mail_tf.training.run_dir import RunDir
        from mail_tf.diagnostics import gate_saturation, saturation_by_kind, signal_propagation

        try:
            run = RunDir(FLAGS.run)
            model, config = run.load_model(), run.config
        except FileNotFoundError as e:
            sys.exit(f"error: {e}")
        images, labels, _ = sample_images(config.dataset, FLAGS.data_dir or config.data_dir, config.image_size,
                                       FLAGS.num, FLAGS.seed)
        rows = gate_saturation(model, images)
        report = {"run": FLAGS.run, "by_kind": saturation_by_kind(rows), "gates": rows,
                  "signal": signal_propagation(model, images, labels)}
        (out / "trained.json").write_text(json.dumps(report, indent=2))
        print(json.dumps({k: report[k] for k in ("by_kind", "signal")}, indent=2))
        return
    saturation, signal = measure(FLAGS.models, sizes, FLAGS.dataset, FLAGS.data_dir, FLAGS.num,
                                 FLAGS.signal_size, FLAGS.seed)
    (out / "saturation.json").write_text(json.dumps(saturation, indent=1))
    (out / "signal.json").write_text(json.dumps(signal, indent=1))
    saturation_plot(saturation, out / "saturation.png")
    print(f"wrote {out / 'saturation.json'}, {out / 'signal.json'}, {out / 'saturation.png'}")


if __name__ == "__main__":
    app.run(with_threads(main))
