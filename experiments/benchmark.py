"""Cost and speed of mail-tf models: parameters, GFLOPs per image pair, train and predict pairs/s.

  python -m experiments.benchmark --models mail_rn18,mail_rn50,resnet18_pair \
      --image_size 128 --batch_size 32 --out runs/benchmark.json
  python -m experiments.benchmark --models mail,robust_mail --adv_iters 10   # + adversarial training

Throughput is measured on random images after warm-up (the first calls trace and compile), with the
same compiled train step as the training loop (TMTL loss, Adam), `--repeats` times: the median is
reported, every repeat is kept in the JSON. The machine is shared and noisy, so speed targets are
ratios against `--baseline` (the plain ResNet-18 pair) measured in the same run:

  python -m experiments.benchmark --models mail_rn18,resnet18_pair --image_size 64 --ratios_only

Cost is reported in three conventions, so any paper's figure can be matched: FLOPs (2 x MACs plus
bias adds), MACs, and FLOPs counting every grouped convolution as a dense one.
"""

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import (THREADS, check_presets, check_ranges, define_shared, number_list, refusing,  # noqa: E402
                             with_threads, write_json)

FLAGS = flags.FLAGS
define_shared(__name__, models=["mail_rn18", "mail_rn50", "resnet18_pair"], image_size=128, batch_size=32, seed=0,
              out=(None, "Write the results as JSON to this path."),
              warmup=(10, "Untimed calls of each step before timing. MAIL reached its steady speed only after "
                          "~10 (docs/PERFORMANCE.md)."), steps=5,
              repeats=(3, "Timed measurements per model and step; the median is reported."), **THREADS)
flags.DEFINE_list("num_classes", ["5", "7"], "Classes per task, one task per modality (paper: 5, 7).")
flags.DEFINE_float("width", 1.0, "Width multiplier (1.0 = the paper's widths).")
flags.DEFINE_integer("attack_pairs", 0, "Also time PGD-10 (eps 4/255, paper protocol) over this many image pairs; "
                     "0: off.")
flags.DEFINE_integer("adv_iters", 0, "Also time the adversarial train step (Algorithm 2) with PGD-k, k = this; "
                     "0: off.")
flags.DEFINE_string("baseline", "resnet18_pair", "Speed ratios are against this preset (benchmarked too, if not "
                    "in --models); empty: no ratios.")
flags.DEFINE_boolean("jit_compile", False, "Compile the steps with XLA. On this 2-core CPU it made MAIL-RN18 and "
                     "the plain pair 4-8x slower (docs/PERFORMANCE.md), so it is off by default.")
flags.DEFINE_boolean("freeze", True, "Predict on the weights frozen as constants (mail_tf.inference.freeze), as "
                     "robust_eval's attacks do; --nofreeze reads them from variables at every call.")
flags.DEFINE_boolean("ratios_only", False, "Print only the speed ratios against --baseline.")
flags.DEFINE_alias("json", "out")
flags.DEFINE_alias("image-size", "image_size")
flags.DEFINE_alias("batch-size", "batch_size")


def _time_per_call(fn, args, warmup, steps, repeats=1):
    """Seconds per call: one list entry per repeat of `steps` calls (after `warmup` untimed ones)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        # Make sure the last step has finished before the clock stops.
        _ = [o.numpy() for o in (out.values() if isinstance(out, dict) else [out])]
        times.append((time.perf_counter() - start) / steps)
    return times


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


class _Bench:
    """One preset built, with its compiled steps traced and warmed up."""

    def __init__(self, name, num_classes, image_size, batch_size, width, warmup, steps, seed, adv_iters, jit_compile,
                 freeze=True):
        import keras
        import tensorflow as tf

        from mail_tf import build_model
        from mail_tf.attacks import SignAttack
        from mail_tf.training import make_predict_fn, make_train_step
        from mail_tf.training.optimizers import Adam

        keras.utils.set_random_seed(seed)
        self.name, self.steps, self.batch_size = name, steps, batch_size
        self.tasks = {f"task{i + 1}": n for i, n in enumerate(num_classes)}
        self.model = build_model(name, self.tasks, input_shape=(image_size, image_size, 3), width=width)
        gen = tf.random.Generator.from_seed(seed)
        images = [gen.uniform((batch_size, image_size, image_size, 3)) for _ in self.tasks]
        labels = {t: gen.uniform((batch_size,), 0, n, dtype=tf.int32) for t, n in self.tasks.items()}
        # One optimiser for both train steps: the second then creates no slot variables, so it is
        # traced once instead of twice (the timed calls are the same either way).
        optimizer = Adam(1e-4)
        self.calls = {"train": (make_train_step(self.model, optimizer, jit_compile=jit_compile), (images, labels)),
                      "predict": (make_predict_fn(self.model, jit_compile=jit_compile, freeze=freeze), (images,))}
        if adv_iters:
            adv = make_train_step(self.model, optimizer, adversarial=SignAttack("pgd", iters=adv_iters),
                                  jit_compile=jit_compile)
            self.calls["adv_train"] = (adv, (images, labels))
        self.warmup = warmup
        self.seconds = {kind: [] for kind in self.calls}

    def warm_up(self):
        """Trace, then `warmup` untimed calls of every step in all (the last synced). Only after every
        model is built: seeding (`keras.utils.set_random_seed`) clears TensorFlow's kernel caches, and
        the next call of a step traced before then took seconds to instantiate its graph again."""
        for fn, args in self.calls.values():
            _time_per_call(fn, args, max(self.warmup - 1, 0), 1)

    def measure(self):
        """One timed repeat of every step kind."""
        for kind, (fn, args) in self.calls.items():
            self.seconds[kind] += _time_per_call(fn, args, 0, self.steps)

    def pairs_per_s(self, kind):
        return self.batch_size / statistics.median(self.seconds[kind])


def benchmark_models(names, num_classes, image_size, batch_size, width=1.0, warmup=10, steps=5, seed=0, adv_iters=0,
                     attack_pairs=0, repeats=1, jit_compile=False, freeze=True, progress=None):
    """Measure the presets `names`; one result dict each (keys as in the JSON report).

    Repeats are interleaved (model A, model B, A, B, ...), so a change of the machine's speed during
    the run shifts every model alike and the ratios stay fair; the median repeat is reported.
    """
    from mail_tf.flops import count_costs
    from mail_tf.threads import pools

    benches = []
    for i, name in enumerate(names, start=1):
        if progress:
            progress(f"[{i}/{len(names)}] {name}: building ...")
        benches.append(_Bench(name, num_classes, image_size, batch_size, width, warmup, steps, seed, adv_iters,
                              jit_compile, freeze))
    for bench in benches:
        if progress:
            progress(f"{bench.name}: tracing, warming up ...")
        bench.warm_up()
    for r in range(repeats):
        if progress:
            progress(f"timing, repeat {r + 1}/{repeats} ...")
        for bench in benches:
            bench.measure()
    results = []
    for bench in benches:
        extra = {}
        if adv_iters:
            extra = {"adv_iters": adv_iters, "adv_train_pairs_per_s": bench.pairs_per_s("adv_train")}
        if attack_pairs:
            extra.update(attack_pairs=attack_pairs, pgd10_seconds=time_pgd(bench.model, bench.tasks, image_size,
                                                                           batch_size, attack_pairs, seed))
        costs = count_costs(bench.model)
        results.append({
            "model": bench.name,
            "params": int(bench.model.count_params()),
            "gflops": costs["flops"] / 1e9,
            "gmacs": costs["macs"] / 1e9,
            "gflops_grouped_as_dense": costs["flops_grouped_as_dense"] / 1e9,
            "train_pairs_per_s": bench.pairs_per_s("train"),
            "predict_pairs_per_s": bench.pairs_per_s("predict"),
            "train_pairs_per_s_repeats": [batch_size / t for t in bench.seconds["train"]],
            "predict_pairs_per_s_repeats": [batch_size / t for t in bench.seconds["predict"]],
            "image_size": image_size,
            "batch_size": batch_size,
            "width": width,
            "repeats": repeats,
            "jit_compile": jit_compile,
            "freeze": freeze,
            "threads": pools(),
            **extra,
        })
    return results


def add_ratios(results, baseline):
    """Each result's speeds as ratios of `baseline`'s, from the same run (> 1: faster): train and
    predict throughput, and with --adv_iters / --attack_pairs Algorithm 2's throughput and PGD-10's.

    `<kind>_ratio` divides the medians; `<kind>_ratio_repeats` are the ratios of the two models'
    back-to-back measurements in each repeat, which a drift of the machine's speed between repeats
    leaves alone, and `<kind>_ratio_paired` is their median."""
    base = next(r for r in results if r["model"] == baseline)
    for r in results:
        r["baseline"] = baseline
        for kind in ("train", "predict"):
            r[f"{kind}_ratio"] = r[f"{kind}_pairs_per_s"] / base[f"{kind}_pairs_per_s"]
            paired = [a / b for a, b in zip(r[f"{kind}_pairs_per_s_repeats"], base[f"{kind}_pairs_per_s_repeats"])]
            r[f"{kind}_ratio_repeats"] = paired
            r[f"{kind}_ratio_paired"] = statistics.median(paired)
        if "adv_train_pairs_per_s" in r:
            r["adv_train_ratio"] = r["adv_train_pairs_per_s"] / base["adv_train_pairs_per_s"]
        if "pgd10_seconds" in r:
            r["attack_ratio"] = base["pgd10_seconds"] / r["pgd10_seconds"]


def format_ratios(results):
    def extra(r):
        return "".join(f"  {label} {r[key]:.2f}x" for key, label in (("adv_train_ratio", "Algorithm 2"),
                                                                    ("attack_ratio", "PGD-10")) if key in r)
    def ratio(r, kind):
        paired = r[f"{kind}_ratio_repeats"]
        spread = f" (per repeat {min(paired):.2f}-{max(paired):.2f}x, median {r[f'{kind}_ratio_paired']:.2f}x)"
        return f"{kind} {r[f'{kind}_ratio']:.2f}x" + (spread if len(paired) > 1 else "")

    return "\n".join(f"{r['model']:<16} {ratio(r, 'train')}  {ratio(r, 'predict')}{extra(r)}  "
                     f"{r['baseline']} ({r['image_size']} px, batch {r['batch_size']})" for r in results)


def format_table(results):
    adv = any("adv_train_pairs_per_s" in r for r in results)
    head = (f"{'model':<16}{'params':>14}{'GFLOPs/pair':>13}{'GMACs':>8}{'dense-grouped':>15}"
            f"{'train pairs/s':>15}{'predict pairs/s':>17}")
    if adv:
        head += f"{'PGD-' + str(results[0]['adv_iters']) + ' AT pairs/s':>20}"
    pgd = any("pgd10_seconds" in r for r in results)
    if pgd:
        head += f"{'PGD-10 s / ' + str(results[0]['attack_pairs']) + ' pairs':>22}"
    rows = [f"{r['model']:<16}{r['params']:>14,}{r['gflops']:>13.3f}{r['gmacs']:>8.3f}{r['gflops_grouped_as_dense']:>15.3f}"
            f"{r['train_pairs_per_s']:>15.1f}"
            f"{r['predict_pairs_per_s']:>17.1f}" + (f"{r['adv_train_pairs_per_s']:>20.2f}" if adv else "")
            + (f"{r['pgd10_seconds']:>22.1f}" if pgd else "") for r in results]
    return "\n".join([head] + rows)


def main(argv):
    del argv
    with refusing():
        check_ranges(FLAGS, {"image_size": (32, None), "batch_size": (1, None), "width": (0.01, None), "warmup": (0, None),
                             "steps": (1, None), "seed": (0, None), "attack_pairs": (0, None), "adv_iters": (0, None),
                             "repeats": (1, None)})
    models = list(FLAGS.models) + ([FLAGS.baseline] if FLAGS.baseline and FLAGS.baseline not in FLAGS.models else [])
    with refusing():
        check_presets("--models/--baseline", models)
        num_classes = number_list("--num_classes", FLAGS.num_classes, int, lambda n: n >= 2, "integers >= 2")
    results = benchmark_models(models, num_classes, FLAGS.image_size, FLAGS.batch_size, FLAGS.width, FLAGS.warmup,
                               FLAGS.steps, FLAGS.seed, FLAGS.adv_iters, FLAGS.attack_pairs, FLAGS.repeats,
                               FLAGS.jit_compile, FLAGS.freeze, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if FLAGS.baseline:
        add_ratios(results, FLAGS.baseline)
    if not FLAGS.ratios_only:
        print(f"image size {FLAGS.image_size}, batch {FLAGS.batch_size}, heads {num_classes}, "
              f"median of {FLAGS.repeats}, XLA {'on' if FLAGS.jit_compile else 'off'}, "
              f"predict on {'frozen' if FLAGS.freeze else 'variable'} weights, "
              f"threads {results[0]['threads']} (0: TensorFlow's choice)")
        print(format_table(results))
    if FLAGS.baseline:
        print(format_ratios(results))
    if FLAGS.out:
        write_json(FLAGS.out, results)


if __name__ == "__main__":
    app.run(with_threads(main))
