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

from experiments.cli import (THREADS, define_flags, define_shared, no_arguments, number_list, refusing,  # noqa: E402
                             with_threads)
from mail_tf.training.config import TrainConfig  # noqa: E402

FLAGS = flags.FLAGS
define_shared(__name__, dataset="medmnist", **THREADS)
flags.DEFINE_multi_string("model_option", None, "NAME=VALUE builder argument of the model preset, repeatable, e.g. "
                          "rpf_ratio=0.5, man=false, man_sigma=0.3, rpf_erla=false (Robust-MAIL's switches).")
# Every TrainConfig setting is a flag, defined from the field (type, default, help, choices).
CONFIG_FLAGS = define_flags(TrainConfig.flag_settings(), __name__)
define_shared(__name__, run=(None, "Run directory to write (default runs/<dataset>-<model>-<time>)."))
flags.DEFINE_alias("output_dir", "run")     # the spelling before --run
flags.DEFINE_bool("resume", False, "Continue the run in --run from its last checkpoint.")
flags.DEFINE_bool("overwrite", False, "Replace the run in --run.")


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
    no_arguments(argv)
    start = time.time()
    from mail_tf.data import DataError
    from mail_tf.training import RunError, Trainer, finish

    with refusing(RunError, DataError):
        config = config_from_flags()
        out = FLAGS.run or default_output_dir(config)
        trainer = Trainer(config, out, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
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
    app.run(with_threads(main))
