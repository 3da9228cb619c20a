"""Train a multi-branch model on a named experiment; evaluate and export the best epoch.

  python -m experiments.train                                   # embedded MedMNIST, MAIL-RN18
  python -m experiments.train --dataset sipakmed --data_dir /data --epochs 50 --run runs/sip
  python -m experiments.train --run runs/sip --resume    # continue an interrupted run
  python -m experiments.train --model robust_mail --adversarial # Robust-MAIL, Algorithm 2 (PGD-10)
  python -m experiments.train --model mail --adversarial --model_option fusion=cascaded

Settings not given on the command line come from the experiment's defaults
(mail_tf.training.config.EXPERIMENT_DEFAULTS), then from TrainConfig's.
"""

import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from experiments.cli import number_list  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "medmnist", "Named experiment or KIND[:OPTION]=ROOT,... spec.")
flags.DEFINE_string("model", "mail_rn18", "Model preset (mail = mail_rn18, mail_rn50, robust_mail, resnet18_pair, "
                    "resnet50_pair, drifa_net).")
flags.DEFINE_float("width", 1.0, "Width multiplier of the model (1.0: the paper's widths).")
flags.DEFINE_multi_string("model_option", None, "NAME=VALUE builder argument of the model preset, repeatable, e.g. "
                          "rpf_ratio=0.5, man=false, man_sigma=0.3, rpf_erla=false (Robust-MAIL's switches).")
flags.DEFINE_bool("adversarial", False, "Adversarial training (Algorithm 2): update on attacks crafted per batch.")
flags.DEFINE_enum("adv_method", "pgd", ["fgsm", "bim", "pgd", "mim"], "Attack used for adversarial training.")
flags.DEFINE_float("adv_eps", 4 / 255, "l-inf radius of the training attack, in [0, 1] pixel units.")
flags.DEFINE_float("adv_step", None, "Step of the training attack (default adv_eps / 4).")
flags.DEFINE_integer("adv_iters", 10, "Iterations of the training attack (k of Algorithm 2).")
flags.DEFINE_float("adv_clean_weight", 0.0, "w in [0, 1): train on (1 - w) * L(X*) + w * L(X), the adversarial and "
                   "clean losses mixed; 0 (Algorithm 2) trains on the adversarial batch only.")
flags.DEFINE_integer("epochs", 100, "Maximum epochs (medmnist: 20).")
flags.DEFINE_integer("image_size", 128, "Square input size (medmnist: 48).")
flags.DEFINE_integer("batch_size", 32, "Image pairs per step (medmnist: 64).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, splits, pairing, shuffling and augmentation.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adamw", "sgd"], "adam: the notebook's; sgd: the paper's.")
flags.DEFINE_float("learning_rate", None, "Initial learning rate (default adam 1e-4, sgd 1e-3; medmnist 1e-3).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay on kernels (applied by the optimiser).")
flags.DEFINE_float("l2", 0.0, "L2 penalty on conv/dense kernels added to the loss.")
flags.DEFINE_list("loss_weights", None, "TMTL weight per task, in task order (default 1/T each).")
flags.DEFINE_enum("lr_schedule", "plateau", ["plateau", "cosine"], "plateau: ReduceLROnPlateau on the "
                  "validation loss (the paper's); cosine: decay to --min_lr over --epochs (medmnist).")
flags.DEFINE_float("lr_factor", 0.1, "ReduceLROnPlateau factor on the validation loss.")
flags.DEFINE_integer("lr_patience", 10, "Plateau schedule: epochs without improvement before the LR drops.")
flags.DEFINE_float("min_lr", 1e-6, "Floor of the learning rate.")
flags.DEFINE_integer("early_stopping_patience", 20, "Epochs without improvement before stopping; 0: off "
                     "(medmnist: 8).")
flags.DEFINE_float("bn_momentum", None, "BatchNorm moving-average momentum (default: the model's 0.99; "
                   "medmnist: 0.9).")
flags.DEFINE_bool("paper_augment", True, "The paper's 4x augmented training set (medmnist: off).")
flags.DEFINE_bool("random_augment", False, "Random rotation/translation on the fly (medmnist: on).")
flags.DEFINE_bool("shuffle_pairs", False, "Draw new cross-modality partners every epoch instead of one "
                  "fixed pairing.")
flags.DEFINE_float("ema_decay", 0.0, "Per-step decay of an exponential moving average of the weights (and BN "
                   "statistics) that is validated, kept and exported instead of the raw weights, e.g. 0.995; "
                   "0: off (the default).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"], "Mixed precision (GPU).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (GPU; slower on CPU).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: one device, this machine's devices, or the workers of TF_CONFIG "
                  "(MultiWorkerMirroredStrategy; the chief alone writes --run).")
flags.DEFINE_string("data_dir", None, "Folder holding the downloaded datasets (default $MAIL_TF_DATA_DIR or ./data).")
flags.DEFINE_string("manifest", None, "Reuse the splits of this split manifest (splits.json).")
flags.DEFINE_enum("split_protocol", None, ["grouped", "notebook"],
                  "grouped (default): official splits kept, the rest split with whole lesions on one side. notebook: "
                  "the reference notebooks' leaky protocol (augment 4x, then split at image level), to measure the "
                  "leak; needs --nopaper_augment and prints a warning.")
flags.DEFINE_enum("streaming", None, ["auto", "on", "off"],
                  "Image files: on: decoded in tf.data as batches need them (data larger than memory); off: decoded "
                  "into memory once; auto (default): on above MAIL_TF_STREAM_BYTES (4 GiB) decoded. Same pixels.")
flags.DEFINE_bool("skip_bad_images", False, "Skip unreadable images (listed) instead of failing.")
flags.DEFINE_string("run", None, "Run directory to write (default runs/<dataset>-<model>-<time>).")
flags.DEFINE_alias("output_dir", "run")     # the spelling before --run
flags.DEFINE_bool("resume", False, "Continue the run in --run from its last checkpoint.")
flags.DEFINE_bool("overwrite", False, "Replace the run in --run.")

CONFIG_FLAGS = ("model", "width", "epochs", "image_size", "batch_size", "seed", "optimizer", "learning_rate",
                "momentum", "weight_decay", "l2", "loss_weights", "lr_schedule", "lr_factor", "lr_patience", "min_lr",
                "early_stopping_patience", "bn_momentum", "paper_augment", "random_augment", "shuffle_pairs", "ema_decay", "precision", "jit_compile",
                "strategy", "data_dir", "manifest", "split_protocol", "streaming", "skip_bad_images", "adversarial", "adv_method", "adv_eps",
                "adv_step", "adv_iters", "adv_clean_weight")


def parse_model_options(values):
    """['rpf_ratio=0.5', 'man=false'] -> {'rpf_ratio': 0.5, 'man': False}."""
    import json

    options = {}
    for item in values or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--model_option={item!r}: expected NAME=VALUE")
        text = raw.strip()
        lowered = text.lower()
        if lowered in ("true", "false", "none", "null"):
            value = {"true": True, "false": False}.get(lowered)
        else:
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        options[name.strip()] = value
    return options


def config_from_flags():
    """TrainConfig from the experiment defaults and the flags the user actually gave."""
    import json
    from pathlib import Path

    from mail_tf.training import TrainConfig

    given = {name: FLAGS[name].value for name in CONFIG_FLAGS if FLAGS[name].present}
    if FLAGS["model_option"].present:
        given["model_options"] = parse_model_options(FLAGS.model_option)
    if "loss_weights" in given:
        given["loss_weights"] = number_list("--loss_weights", given["loss_weights"], float, lambda w: w >= 0,
                                            "numbers >= 0")
    if FLAGS.resume and FLAGS.run:
        # Resuming takes the run's own settings; the flags given must agree with them (checked later).
        saved = Path(FLAGS.run) / "config.json"
        if saved.exists():
            if FLAGS["dataset"].present:
                given["dataset"] = FLAGS.dataset
            return TrainConfig.from_dict({**json.loads(saved.read_text()), **given})
    return TrainConfig.for_experiment(FLAGS.dataset, **given)


def default_output_dir(config):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config.dataset}-{config.model}")[:80]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def print_summary(metrics, out, seconds):
    print(f"\nbest epoch {metrics['best_epoch']} of {metrics['epochs_run']}; wall time {seconds / 60:.1f} min")
    print(f"{'split':6} {'task':18} {'n':>6} {'accuracy':>9} {'macro-F1':>9} {'AUC':>7}")
    for split in ("val", "test"):
        for task, m in metrics[split].items():
            if isinstance(m, dict):
                auc = "n/a" if m["auc"] is None else f"{m['auc']:.4f}"
                print(f"{split:6} {task:18} {m['count']:6d} {m['accuracy']:9.4f} {m['macro_f1']:9.4f} {auc:>7}")
    print(f"run directory: {out}  (metrics.json, curves.png, model.keras, export/)")


def main(argv):
    logging.set_verbosity(logging.WARNING)      # TensorFlow's INFO lines while exporting
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; settings are --flags (see --help)")
    start = time.time()
    from mail_tf.data import DataError
    from mail_tf.training import RunError, Trainer, finish

    try:
        config = config_from_flags()
        out = FLAGS.run or default_output_dir(config)
        trainer = Trainer(config, out, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
    except (RunError, DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    try:
        trainer.fit()
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted after epoch {trainer.state.epoch}; continue with "
                 f"python -m experiments.train --run {out} --resume")
    except FloatingPointError as e:
        sys.exit(f"error: {e}")
    metrics = finish(trainer)
    if config.strategy == "multi_worker":
        from mail_tf.training.trainer import weights_fingerprint

        print(f"weights fingerprint {weights_fingerprint(trainer.model)}", flush=True)
    if not trainer.chief:              # a worker's temporary run directory, ours to remove
        import shutil

        shutil.rmtree(trainer.out, ignore_errors=True)
        print(f"worker done; the chief wrote the run to {trainer.run_dir}")
        return
    print_summary(metrics, trainer.out, time.time() - start)


if __name__ == "__main__":
    app.run(main)
