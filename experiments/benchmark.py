"""Cost and speed of mail-tf models: parameters, GFLOPs per image pair, train and predict pairs/s.

  python -m experiments.benchmark --models mail_rn18,mail_rn50,resnet18_pair \
      --image-size 128 --batch-size 32 --json runs/benchmark.json
  python -m experiments.benchmark --models mail,robust_mail --adv_iters 10   # + adversarial training

Throughput is measured on random images after warm-up (the first calls trace and compile), with the
same compiled train step as the training loop (TMTL loss, Adam).
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import check_ranges, number_list  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["mail_rn18", "mail_rn50", "resnet18_pair"], "Model presets to benchmark.")
flags.DEFINE_integer("image_size", 128, "Square image size of every modality.")
flags.DEFINE_integer("batch_size", 32, "Image pairs per step.")
flags.DEFINE_list("num_classes", ["5", "7"], "Classes per task, one task per modality (paper: 5, 7).")
flags.DEFINE_float("width", 1.0, "Width multiplier (1.0 = the paper's widths).")
flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
flags.DEFINE_integer("steps", 5, "Timed steps per measurement.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("attack_pairs", 0, "Also time PGD-10 (eps 4/255, paper protocol) over this many image pairs; "
                     "0: off.")
flags.DEFINE_integer("adv_iters", 0, "Also time the adversarial train step (Algorithm 2) with PGD-k, k = this; "
                     "0: off.")
flags.DEFINE_string("json", None, "Write the results as JSON to this path.")
flags.DEFINE_alias("image-size", "image_size")
flags.DEFINE_alias("batch-size", "batch_size")


def _time_per_call(fn, args, warmup, steps):
    for _ in range(warmup):
        fn(*args)
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    # Make sure the last step has finished before the clock stops.
    _ = [o.numpy() for o in (out.values() if isinstance(out, dict) else [out])]
    return (time.perf_counter() - start) / steps


def time_pgd(model, tasks, image_size, batch_size, pairs, seed=0):
    """Seconds to craft and classify PGD-10 examples for `pairs` random image pairs (after one
    untimed batch that traces the attack)."""
    import tensorflow as tf

    from mail_tf.attacks.evaluate import AttackSpec, robust_accuracy

    gen = tf.random.Generator.from_seed(seed)
    images = tuple(gen.uniform((pairs, image_size, image_size, 3)) for _ in tasks)
    labels = {t: gen.uniform((pairs,), 0, n, dtype=tf.int32) for t, n in tasks.items()}
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    task = next(iter(tasks))
    spec = AttackSpec("pgd", iters=10)
    compiled = {}
    robust_accuracy(model, {task: ds.take(1)}, spec, "paper", seed=seed, cache=compiled)     # trace
    start = time.perf_counter()
    robust_accuracy(model, {task: ds}, spec, "paper", seed=seed, cache=compiled)
    return time.perf_counter() - start


def benchmark_model(name, num_classes, image_size, batch_size, width=1.0, warmup=2, steps=5, seed=0, adv_iters=0,
                    attack_pairs=0):
    """Measure one preset; returns the result dict (keys as in the JSON report)."""
    import keras
    import tensorflow as tf

    from mail_tf import build_model
    from mail_tf.attacks import SignAttack
    from mail_tf.flops import count_flops
    from mail_tf.training import make_predict_fn, make_train_step

    keras.utils.set_random_seed(seed)
    tasks = {f"task{i + 1}": n for i, n in enumerate(num_classes)}
    model = build_model(name, tasks, input_shape=(image_size, image_size, 3), width=width)
    gen = tf.random.Generator.from_seed(seed)
    images = [gen.uniform((batch_size, image_size, image_size, 3)) for _ in tasks]
    labels = {t: gen.uniform((batch_size,), 0, n, dtype=tf.int32) for t, n in tasks.items()}
    train_step = make_train_step(model, keras.optimizers.Adam(1e-4))
    predict = make_predict_fn(model)
    train_s = _time_per_call(train_step, (images, labels), warmup, steps)
    predict_s = _time_per_call(predict, (images,), warmup, steps)
    extra = {}
    if adv_iters:
        adv_step = make_train_step(model, keras.optimizers.Adam(1e-4), adversarial=SignAttack("pgd", iters=adv_iters))
        extra = {"adv_iters": adv_iters,
                 "adv_train_pairs_per_s": batch_size / _time_per_call(adv_step, (images, labels), warmup, steps)}
    if attack_pairs:
        extra.update(attack_pairs=attack_pairs,
                     pgd10_seconds=time_pgd(model, tasks, image_size, batch_size, attack_pairs, seed))
    return {
        "model": name,
        "params": int(model.count_params()),
        "gflops": count_flops(model) / 1e9,
        "train_pairs_per_s": batch_size / train_s,
        "predict_pairs_per_s": batch_size / predict_s,
        "image_size": image_size,
        "batch_size": batch_size,
        "width": width,
        **extra,
    }


def format_table(results):
    adv = any("adv_train_pairs_per_s" in r for r in results)
    head = f"{'model':<16}{'params':>14}{'GFLOPs/pair':>13}{'train pairs/s':>15}{'predict pairs/s':>17}"
    if adv:
        head += f"{'PGD-' + str(results[0]['adv_iters']) + ' AT pairs/s':>20}"
    pgd = any("pgd10_seconds" in r for r in results)
    if pgd:
        head += f"{'PGD-10 s / ' + str(results[0]['attack_pairs']) + ' pairs':>22}"
    rows = [f"{r['model']:<16}{r['params']:>14,}{r['gflops']:>13.3f}{r['train_pairs_per_s']:>15.1f}"
            f"{r['predict_pairs_per_s']:>17.1f}" + (f"{r['adv_train_pairs_per_s']:>20.2f}" if adv else "")
            + (f"{r['pgd10_seconds']:>22.1f}" if pgd else "") for r in results]
    return "\n".join([head] + rows)


def main(argv):
    del argv
    try:
        check_ranges(FLAGS, {"image_size": (32, None), "batch_size": (1, None), "width": (0.01, None), "warmup": (0, None),
                             "steps": (1, None), "seed": (0, None), "attack_pairs": (0, None), "adv_iters": (0, None)})
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    from mail_tf.models import PRESETS

    unknown = [m for m in FLAGS.models if m not in PRESETS]
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; choose from {', '.join(sorted(PRESETS))}")
    try:
        num_classes = number_list("--num_classes", FLAGS.num_classes, int, lambda n: n >= 2, "integers >= 2")
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    results = []
    for i, name in enumerate(FLAGS.models, start=1):
        print(f"[{i}/{len(FLAGS.models)}] {name}: building and timing ...", file=sys.stderr, flush=True)
        results.append(benchmark_model(name, num_classes, FLAGS.image_size, FLAGS.batch_size, FLAGS.width,
                                       FLAGS.warmup, FLAGS.steps, FLAGS.seed, FLAGS.adv_iters, FLAGS.attack_pairs))
    print(f"image size {FLAGS.image_size}, batch {FLAGS.batch_size}, heads {num_classes}")
    print(format_table(results))
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
