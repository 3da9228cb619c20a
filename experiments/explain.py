"""Grad-CAM maps of a trained run: every task through every modality (cross-modal maps included).

  python -m experiments.explain --run runs/x breast.png chest.jpg     # one image per modality, any size
  python -m experiments.explain --run runs/x --split test --num 8     # the first 8 evaluation pairs
  python -m experiments.explain --run runs/x --num 4 --attack pgd --eps 0.0157   # and the attacked pairs
  python -m experiments.explain --run runs/x --num 64 --gallery 3     # + 3 correct and 3 wrong pairs per task

Writes, per pair, `pair_NNN.png` (rows: modalities; columns: the image, then per task its heat map
and the overlay, titled with the predicted and true class; a map of a task through another task's
modality is a cross-modal map) and `pair_NNN.npz` (images, maps as `<task>/<modality>`, predicted
and true classes), and `explain.json` listing them. `--method gradcam++` or `occlusion` (gradient
free) instead of Grad-CAM; `--targets A,B` explains other layers (one per modality). Robust-MAIL is
explained with its random projection draw fixed (`--draws N` averages N draws).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import THREADS, check_ranges, define_shared, refusing, with_threads  # noqa: E402
from mail_tf.figures import pyplot, save_figure  # noqa: E402

FLAGS = flags.FLAGS
define_shared(__name__, run=None, seed=(0, "Seed of the attack's random start."),
              out=(None, "Output folder (default <run>/explain)."),
              split=("test", "Split whose evaluation pairs are explained (no images given)."),
              eps=(4 / 255, "l-inf radius of --attack."), iters=(10, "Iterations of --attack."), **THREADS)
flags.DEFINE_integer("num", 4, "How many pairs of --split to explain.")
flags.DEFINE_string("task", None, "Whose evaluation pairs (default the first task's): each image of that task once, "
                    "with the partners the evaluation uses.")
flags.DEFINE_enum("method", "gradcam", ["gradcam", "gradcam++", "occlusion"], "Explanation method.")
flags.DEFINE_list("targets", None, "Layer names to explain, one per modality (default: each branch's last spatial map).")
flags.DEFINE_integer("draws", 1, "Random projection draws to average (Robust-MAIL); 1: the current draw, fixed.")
flags.DEFINE_enum("attack", None, ["pgd"], "Also explain the pairs after this attack (every task's loss).")
flags.DEFINE_integer("gallery", 0, "Also draw gallery.png: per task, this many correctly and this many wrongly "
                     "classified pairs among each task's first --num evaluation pairs, side by side (own-modality maps).")


def file_pairs(paths, image_size, num_modalities):
    """Images given on the command line -> model inputs (as the exported model preprocesses them)."""
    from mail_tf.data.images import decode_bytes
    from mail_tf.export import serving_inputs

    if len(paths) != num_modalities:
        raise ValueError(f"the model takes {num_modalities} images, one per modality; got {len(paths)}")
    images = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image {p}: no such file")
        images.append(decode_bytes(Path(p).read_bytes(), f"image {p}")[None])
    return [x.numpy() for x in serving_inputs(images, image_size)], None


def split_pairs(modalities, split, num, task, seed):
    """The first `num` evaluation pairs of `task` (the partners robust_eval and training use)."""
    from mail_tf.data import eval_partners

    tasks = [m.task for m in modalities]
    task = task or tasks[0]
    if task not in tasks:
        raise ValueError(f"--task={task!r}: expected one of {tasks}")
    index = [idx[:num] for idx in eval_partners(modalities, split, seed)[task]]
    images = [m.images[split][i].astype("float32") / 255.0 for m, i in zip(modalities, index)]
    labels = {m.task: m.labels[split][i] for m, i in zip(modalities, index)}
    return images, labels


_EXPLAINERS = {}


def explain(model, images, method, targets, draws):
    """{task: [maps per modality]} and the predicted classes."""
    import numpy as np

    from mail_tf.explain import GradCAM, occlusion

    if method == "occlusion":
        logits = model(images, training=False)
        predicted = {t: np.argmax(v.numpy(), -1) for t, v in logits.items()}
        size = images[0].shape[1]
        patch = max(2, size // 8)
        maps = {t: [occlusion(model, images, t, m, predicted[t], patch=patch, stride=max(1, patch // 2))
                    for m in range(len(images))] for t in logits}
        return maps, predicted
    key = (id(model), tuple(targets or ()), method)
    if key not in _EXPLAINERS:          # one GradCAM (one traced gradient function) per model and setting
        _EXPLAINERS[key] = GradCAM(model, targets=targets, method=method)
    maps = _EXPLAINERS[key](images, draws=draws)
    return {t: maps[t] for t in maps if t not in ("explained", "draws")}, maps["explained"]


def finish_grid(fig, axes, path, title):
    """An image grid without axes, titled, written to `path`."""
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=90)


def plot_pair(path, images, maps, predicted, labels, class_names, tasks, title):
    plt = pyplot()

    rows, cols = len(images), 1 + 2 * len(tasks)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for m, image in enumerate(images):
        axes[m][0].imshow(image)
        axes[m][0].set_title(f"{tasks[m]} image", fontsize=8)
        for k, task in enumerate(tasks):
            heat = maps[task][m]
            names = class_names[task]
            true = "" if labels is None else f"\ntrue {names[int(labels[task])]}"
            kind = "own" if k == m else "cross-modal"
            axes[m][1 + 2 * k].imshow(heat, cmap="jet", vmin=0, vmax=1)
            axes[m][1 + 2 * k].set_title(f"{task}\n{kind} map", fontsize=8)
            axes[m][2 + 2 * k].imshow(image)
            axes[m][2 + 2 * k].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[m][2 + 2 * k].set_title(f"predicted {names[int(predicted[task])]}{true}", fontsize=8)
    finish_grid(fig, axes, path, title)


def plot_gallery(path, rows, class_names, title):
    """rows: [(task, modality index, [(image, map, predicted, true) correct...], [... wrong])]: one figure row per
    example rank and task, correct pairs on the left, wrong ones on the right (image, then overlay)."""
    plt = pyplot()

    k = max(max(len(c), len(w)) for _, _, c, w in rows)
    fig, axes = plt.subplots(len(rows) * k, 4, figsize=(8.4, 2.2 * len(rows) * k), squeeze=False)
    for r, (task, _, correct, wrong) in enumerate(rows):
        for side, examples in ((0, correct), (2, wrong)):
            for i in range(k):
                ax_image, ax_map = axes[r * k + i][side], axes[r * k + i][side + 1]
                if i >= len(examples):
                    continue
                image, heat, predicted, true = examples[i]
                names = class_names[task]
                ax_image.imshow(image)
                ax_image.set_title(f"{task}: {'correct' if side == 0 else 'wrong'}\ntrue {names[true]}", fontsize=8)
                ax_map.imshow(image)
                ax_map.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax_map.set_title(f"{FLAGS.method}\npredicted {names[predicted]}", fontsize=8)
    finish_grid(fig, axes, path, title)


def gallery(model, modalities, config, k, out):
    """gallery.png and gallery.json: per task, k correct and k wrong pairs of its first --num test pairs."""
    from mail_tf.explain import right_and_wrong

    rows, listing = [], {}
    tasks = [m.task for m in modalities]
    for t, task in enumerate(tasks):
        images, labels = split_pairs(modalities, FLAGS.split, FLAGS.num, task, config.seed)
        maps, predicted = explain(model, images, FLAGS.method, FLAGS.targets, FLAGS.draws)
        correct, wrong = right_and_wrong(predicted[task], labels[task], k)
        pack = lambda idx: [(images[t][i], maps[task][t][i], int(predicted[task][i]), int(labels[task][i]))  # noqa: E731
                            for i in idx]
        rows.append((task, t, pack(correct), pack(wrong)))
        listing[task] = {"pairs_explained": len(labels[task]), "correct": correct, "wrong": wrong,
                         "accuracy_on_them": float((predicted[task] == labels[task]).mean())}
    names = {m.task: m.class_names for m in modalities}
    plot_gallery(out / "gallery.png", rows, names, f"{FLAGS.method}, {FLAGS.split} pairs of {Path(FLAGS.run).name}")
    (out / "gallery.json").write_text(json.dumps({"run": FLAGS.run, "split": FLAGS.split, "tasks": listing}, indent=2)
                                      + "\n")
    print(f"{out / 'gallery.png'}: " + ", ".join(f"{t} {len(v['correct'])} correct / {len(v['wrong'])} wrong"
                                                for t, v in listing.items()), flush=True)


def main(argv):
    with refusing():
        check_ranges(FLAGS, {"num": (1, None), "draws": (1, None), "eps": (0.0, 1.0), "iters": (1, None),
                             "seed": (0, None), "gallery": (0, None)})
        if not FLAGS.run:
            raise ValueError("--run is required: a run directory of experiments.train")
    import numpy as np
    import tensorflow as tf

    from mail_tf import data as mdata
    from mail_tf.attacks.gradient import SignAttack, sign_attack, tmtl_objective
    from mail_tf.training.run_dir import RunDir

    with refusing(FileNotFoundError, mdata.DataError):
        run = RunDir(FLAGS.run)
        model, config = run.load_model(), run.config
        if FLAGS.targets is not None and len(FLAGS.targets) != len(model.inputs):
            raise ValueError(f"--targets={','.join(FLAGS.targets)}: expected one layer name per modality "
                             f"({len(model.inputs)})")
        metrics_path = Path(FLAGS.run) / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        if argv[1:] and FLAGS.gallery:
            raise ValueError("--gallery draws evaluation pairs of --split: give no image files with it")
        if argv[1:]:
            images, labels = file_pairs(argv[1:], config.image_size, len(model.inputs))
            modalities = None
        else:
            modalities = run.load_data()
            images, labels = split_pairs(modalities, FLAGS.split, FLAGS.num, FLAGS.task, config.seed)
        tasks = list(model.output)
        class_names = ({m.task: m.class_names for m in modalities} if modalities else
                       {t: metrics.get("test", {}).get(t, {}).get("class_names") or
                        [str(i) for i in range(model.output[t].shape[-1])] for t in tasks})
        versions = [("clean", images)]
        if FLAGS.attack:
            if labels is None:
                raise ValueError("--attack needs the true classes: explain pairs of --split, not image files")
            objective = tmtl_objective(model, {t: tf.constant(labels[t]) for t in tasks})
            adversarial = sign_attack(objective, images, SignAttack("pgd", FLAGS.eps, iters=FLAGS.iters),
                                      seed=(FLAGS.seed, 0))
            versions.append((f"pgd eps {FLAGS.eps:.4f}", [x.numpy() for x in adversarial]))
        explained = [(name, x, *explain(model, x, FLAGS.method, FLAGS.targets, FLAGS.draws)) for name, x in versions]

    out = Path(FLAGS.out or Path(FLAGS.run) / "explain")
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for v, (name, x, maps, predicted) in enumerate(explained):
        suffix = "" if v == 0 else "_attacked"
        for i in range(len(x[0])):
            stem = out / f"pair_{i:03d}{suffix}"
            pair_maps = {t: [m[i] for m in maps[t]] for t in tasks}
            pair_pred = {t: int(predicted[t][i]) for t in tasks}
            pair_true = None if labels is None else {t: int(labels[t][i]) for t in tasks}
            plot_pair(stem.with_suffix(".png"), [im[i] for im in x], pair_maps, pair_pred, pair_true, class_names,
                      tasks, f"{FLAGS.method}, {name}")
            arrays = {f"{t}/{tasks[m]}": pair_maps[t][m] for t in tasks for m in range(len(x))}
            arrays.update({f"image/{tasks[m]}": x[m][i] for m in range(len(x))})
            np.savez_compressed(stem.with_suffix(".npz"), **arrays)
            listing.append({"pair": i, "version": name, "png": stem.with_suffix(".png").name,
                            "predicted": {t: class_names[t][c] for t, c in pair_pred.items()},
                            "true": None if pair_true is None else {t: class_names[t][c] for t, c in pair_true.items()}})
            print(f"{stem.with_suffix('.png')}: " + ", ".join(
                f"{t} {class_names[t][pair_pred[t]]}" + ("" if pair_true is None else f" (true {class_names[t][pair_true[t]]})")
                for t in tasks), flush=True)
    if FLAGS.gallery:
        gallery(model, modalities, config, FLAGS.gallery, out)
    (out / "explain.json").write_text(json.dumps({"run": FLAGS.run, "method": FLAGS.method,
                                                  "targets": FLAGS.targets or "each branch's last spatial map",
                                                  "pairs": listing}, indent=2) + "\n")


if __name__ == "__main__":
    app.run(with_threads(main))
