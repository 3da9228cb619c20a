"""Robust accuracy of a trained model under white-box l-inf attacks, per task and protocol.

  python -m experiments.robust_eval --model runs/medmnist-robust_mail --attack pgd
  python -m experiments.robust_eval --model RUN --attack mim --iters 20 --protocol adaptive --json r.json

--model is a run directory of experiments.train (model.keras, config.json, splits.json); its
experiment, image size and splits are reused. Protocols (ROBUSTNESS_EVAL.md): `paper` (one draw
while crafting, a fresh one to classify) and `adaptive` (EOT over --eot draws per step,
straight-through clips, accuracy as the mean over --draws classification draws and majority vote);
`both` (default) reports them side by side.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Run directory of experiments.train.")
flags.DEFINE_string("dataset", None, "Named experiment (default: the run's).")
flags.DEFINE_string("data_dir", None, "Folder holding the datasets (default: the run's).")
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split to attack.")
flags.DEFINE_enum("attack", "pgd", ["fgsm", "bim", "pgd", "mim"], "Attack.")
flags.DEFINE_enum("protocol", "both", ["paper", "adaptive", "both"], "Evaluation protocol.")
flags.DEFINE_float("eps", 4 / 255, "l-inf radius per modality, in [0, 1] pixel units.")
flags.DEFINE_float("step", None, "Step size (default eps / 4; fgsm: eps).")
flags.DEFINE_integer("iters", 10, "Attack iterations.")
flags.DEFINE_integer("eot", 20, "Adaptive protocol: draws averaged per gradient step (EOT).")
flags.DEFINE_integer("draws", 10, "Adaptive protocol: classification draws per image.")
flags.DEFINE_integer("num_samples", None, "Attack at most this many images per task (default: all).")
flags.DEFINE_integer("seed", 0, "Seed of random starts and draws.")
flags.DEFINE_integer("batch_size", 64, "Image pairs per attack batch.")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")


def load_run(run_dir):
    """(model, TrainConfig, split manifest) of a run directory, with one-line errors."""
    import keras

    import mail_tf  # noqa: F401  (registers the layers)
    from mail_tf.data import read_manifest
    from mail_tf.training import TrainConfig

    run = Path(run_dir)
    for name in ("model.keras", "config.json", "splits.json"):
        if not (run / name).exists():
            raise FileNotFoundError(f"--model {run}: {name} is missing; expected a finished run directory of "
                                    f"experiments.train")
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    return keras.saving.load_model(run / "model.keras"), config, read_manifest(run / "splits.json")


def print_table(results):
    print(f"{'protocol':9} {'task':18} {'n':>6} {'clean':>7} {'robust':>7} {'robust (vote)':>14}")
    for protocol, per_task in results["protocols"].items():
        for task, r in per_task.items():
            vote = r.get("robust_majority_accuracy")
            print(f"{protocol:9} {task:18} {r['count']:6d} {r['clean_accuracy']:7.4f} {r['robust_accuracy']:7.4f} "
                  f"{'' if vote is None else f'{vote:.4f}':>14}")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; settings are --flags (see --help)")
    if not FLAGS.model:
        sys.exit("error: --model is required (a run directory of experiments.train)")
    import keras

    from mail_tf import data as mdata
    from mail_tf.attacks import SignAttack
    from mail_tf.attacks.evaluate import is_randomized, robust_accuracy

    try:
        attack = SignAttack(FLAGS.attack, FLAGS.eps, FLAGS.step, FLAGS.iters)
        if FLAGS.eot < 1 or FLAGS.draws < 1:
            raise ValueError(f"--eot={FLAGS.eot} and --draws={FLAGS.draws} must be at least 1")
        model, config, manifest = load_run(FLAGS.model)
        dataset = FLAGS.dataset or config.dataset
        modalities = mdata.load_experiment(dataset, config.image_size, config.seed, FLAGS.data_dir or config.data_dir,
                                           manifest=manifest)
    except (FileNotFoundError, ValueError, mdata.DataError) as e:
        sys.exit(f"error: {e}")
    keras.utils.set_random_seed(FLAGS.seed)
    datasets = mdata.eval_datasets(modalities, FLAGS.split, FLAGS.batch_size, config.seed, all_labels=True)
    protocols = ["paper", "adaptive"] if FLAGS.protocol == "both" else [FLAGS.protocol]
    results = {"model": str(FLAGS.model), "model_name": config.model, "randomized": is_randomized(model),
               "dataset": dataset, "split": FLAGS.split, "image_size": config.image_size,
               "attack": {"method": attack.method, "eps": attack.eps, "step": attack.step_size,
                          "iters": attack.steps, "random_start": attack.starts_randomly},
               "eot": FLAGS.eot, "draws": FLAGS.draws, "seed": FLAGS.seed, "protocols": {}}
    for protocol in protocols:
        start = time.time()
        print(f"{protocol} protocol: {attack.method.upper()}-{attack.steps}, eps {attack.eps:.4f} ...", flush=True)
        results["protocols"][protocol] = robust_accuracy(
            model, datasets, attack, protocol, FLAGS.eot, FLAGS.draws, FLAGS.seed, FLAGS.num_samples,
            log=lambda msg: print(msg, flush=True))
        print(f"  {time.time() - start:.0f} s", flush=True)
    print_table(results)
    if FLAGS.json:
        Path(FLAGS.json).parent.mkdir(parents=True, exist_ok=True)
        Path(FLAGS.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"written {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
