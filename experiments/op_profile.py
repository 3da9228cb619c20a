"""Where the time of a train and a predict step goes, per op type and per layer (TF profiler).

  python -m experiments.op_profile --models mail_rn18,resnet18_pair --image_size 64 \
      --out results/profile/profile_64.json

For each model: one train step (TMTL loss + the training loop's Adam) and one predict step on
random images, traced with `tf.profiler`; the JSON has every op type's and every layer class's
kernel milliseconds and kernel count per step (`mail_tf.profiling`), the top rows are printed.
Run it alone: other processes on the CPU inflate the kernel times.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import (THREADS, check_presets, check_ranges, define_shared, refusing, with_threads,  # noqa: E402
                             write_json)

FLAGS = flags.FLAGS
define_shared(__name__, models=["mail_rn18", "resnet18_pair"], image_size=64, batch_size=32,
              seed=(0, "Random seed of the weights and images."),
              out=(None, "Write the full breakdown as JSON to this path."),
              steps=(3, "Traced steps (after 2 untraced warm-up steps)."), top=(12, "Rows of each table to print."),
              **THREADS)


def profile_model(name, image_size, batch_size, steps, seed):
    import keras
    import tensorflow as tf

    from mail_tf import build_model
    from mail_tf.profiling import profile_step
    from mail_tf.training import make_predict_fn, make_train_step
    from mail_tf.training.optimizers import Adam

    keras.utils.set_random_seed(seed)
    tasks = {"task1": 5, "task2": 7}
    model = build_model(name, tasks, input_shape=(image_size, image_size, 3))
    gen = tf.random.Generator.from_seed(seed)
    images = [gen.uniform((batch_size, image_size, image_size, 3)) for _ in tasks]
    labels = {t: gen.uniform((batch_size,), 0, n, dtype=tf.int32) for t, n in tasks.items()}
    optimizer = Adam(1e-4)
    train = profile_step(make_train_step(model, optimizer), (images, labels), model, steps,
                         optimizer_name=optimizer.name)
    predict = profile_step(make_predict_fn(model), (images,), model, steps)
    return {"model": name, "image_size": image_size, "batch_size": batch_size, "train": train, "predict": predict}


def format_report(result, top):
    lines = []
    for phase in ("train", "predict"):
        r = result[phase]
        lines.append(f"{result['model']} {phase}: wall {r['wall_ms_per_step']} ms/step (under the profiler), "
                     f"kernels {r['kernel_ms_per_step']} ms over {r['kernels_per_step']} kernels")
        for table in ("by_layer", "by_op_type"):
            lines.append(f"  {table}:")
            lines += [f"    {row['name']:<44}{row['ms_per_step']:>9.1f} ms{row['kernels_per_step']:>8} kernels"
                      for row in r[table][:top]]
    return "\n".join(lines)


def main(argv):
    del argv
    with refusing():
        check_ranges(FLAGS, {"image_size": (32, None), "batch_size": (1, None), "steps": (1, None),
                             "top": (1, None), "seed": (0, None)})
        check_presets("--models", FLAGS.models)
    results = []
    for i, name in enumerate(FLAGS.models, start=1):
        print(f"[{i}/{len(FLAGS.models)}] {name}: tracing and profiling ...", file=sys.stderr, flush=True)
        results.append(profile_model(name, FLAGS.image_size, FLAGS.batch_size, FLAGS.steps, FLAGS.seed))
        print(format_report(results[-1], FLAGS.top), flush=True)
    if FLAGS.out:
        write_json(FLAGS.out, results)


if __name__ == "__main__":
    app.run(with_threads(main))
