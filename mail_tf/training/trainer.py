"""The training loop: a run directory, epochs of compiled steps, validation, checkpoints, export.

A run directory holds everything of one run:
  config.json         the TrainConfig (compared on resume)
  splits.json         every item's split, reused on resume
  checkpoint.npz      model + optimiser + loop state after the last finished epoch (checkpoint.prev.npz:
                      the one before)
  run.lock            held by the process writing the run (run_dir.py)
  best.weights.h5     weights of the epoch with the lowest validation loss (with --ema_decay: the
                      weight average's, which is what is validated)
  model.keras         the best model, loadable with keras.saving.load_model (after `import mail_tf`)
  export/             SavedModel serving uint8 images of any size -> per-task probabilities
  metrics.json        per-epoch history; validation and test metrics of the best model
  curves.png          training curves;  tensorboard/  the same scalars for TensorBoard
"""

import contextlib
import dataclasses
import hashlib
import inspect
import math
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mail_tf import data as mdata
from mail_tf.layers.noise import noise_layers
from mail_tf.layers.walk import sublayers
from mail_tf.models.common import MIN_IMAGE_SIZE
from mail_tf.models.registry import PRESETS
from mail_tf.training.averaging import WeightAverage
from mail_tf.training.decay import decayed_kernels
from mail_tf.training import optimizers
from mail_tf.training.metrics import classification_metrics, cross_entropy
from mail_tf.training.report import plot_history
from mail_tf.training.run_dir import (BEST, BEST_PENDING, CHECKPOINT, MARKER, RunError, check_run_dir, commit_best,
                                      load_checkpoint, recover_best, save_checkpoint, start_run_dir)
from mail_tf.training.step import make_distributed_predict_fn, make_train_step

def check_config(config):
    """Fail fast, before any data is read, on settings the network cannot take."""
    if config.model not in PRESETS:
        raise RunError(f"unknown model {config.model!r}; choose one of {', '.join(sorted(PRESETS))}")
    builder, settings = PRESETS[config.model]
    try:
        inspect.signature(builder).bind_partial(**{**settings, **(config.model_options or {})})
    except TypeError as e:
        raise RunError(f"model_options {config.model_options} do not fit {config.model}: {e}") from None
    if config.image_size < MIN_IMAGE_SIZE:
        raise RunError(f"image_size={config.image_size} is too small for {config.model}: its branches "
                       f"downsample 32x, so images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    try:
        mdata.resolve_experiment(config.dataset)
    except mdata.DataError as e:
        raise RunError(str(e)) from None


def make_optimizer(config, model):
    """The optimiser of `config`; its decoupled `weight_decay` acts on `decay.decayed_kernels(model)`
    only (kernels, chosen by rank: never BN, biases, attention scales, or Robust-MAIL's self-decayed
    weights)."""
    kwargs = dict(learning_rate=config.learning_rate)
    if config.weight_decay:
        kwargs["weight_decay"] = config.weight_decay
    if config.optimizer == "sgd":
        optimizer = optimizers.SGD(momentum=config.momentum, **kwargs)
    elif config.optimizer == "adamw":
        optimizer = optimizers.AdamW(**{"weight_decay": 0.0, **kwargs})
    else:
        optimizer = optimizers.Adam(**kwargs)
    if config.weight_decay:
        kernels = {id(v) for v in decayed_kernels(model)}
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in kernels])
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def make_strategy(name):
    """default (one device), mirrored (this machine's devices) or multi_worker (the cluster of
    TF_CONFIG). MultiWorkerMirroredStrategy must exist before TensorFlow runs its first op."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise RunError("--strategy multi_worker reads its cluster from TF_CONFIG (set it for every worker: "
                           "README, Scaling out)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the run: no cluster, the `chief` task, or worker 0 without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def worker_dir(run_dir, resume):
    """A non-chief worker's own temporary run directory (the chief alone writes the run); resuming, it
    starts from a copy of the run's checkpoint, so every worker continues from the same step."""
    tmp = Path(tempfile.mkdtemp(prefix="mail_tf_worker_"))
    if resume:
        for name in ("config.json", "splits.json", CHECKPOINT, BEST, MARKER):
            if (Path(run_dir) / name).exists():
                shutil.copy2(Path(run_dir) / name, tmp / name)
    return tmp


def weights_fingerprint(model):
    """sha256 of every weight's bytes: equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for w in model.weights:
        digest.update(np.ascontiguousarray(w.numpy()).tobytes())
    return digest.hexdigest()


# Shard input by element on every strategy: our datasets come from memory (or a file list), which
# the default AUTO policy would first try, and fail, to shard by file.
DATA_OPTIONS = tf.data.Options()
DATA_OPTIONS.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA


def configure_batch_norm(model, synchronized=False, momentum=None):
    """Training-time BN settings: statistics over the global batch (the same numbers as on one
    device) and the moving-average momentum (None keeps the model's)."""
    for layer in sublayers(model, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = layer.synchronized or synchronized
            if momentum is not None:
                layer.momentum = momentum


def l2_penalty(model, factor):
    """factor * the summed squares of `decay.decayed_kernels(model)` (the coupled `--l2`)."""
    kernels = decayed_kernels(model)
    return lambda: factor * tf.add_n([tf.reduce_sum(tf.square(tf.cast(k, tf.float32))) for k in kernels])


def cosine_learning_rate(config, epoch):
    """Learning rate of epoch (1-based) under cosine decay from learning_rate towards min_lr."""
    progress = (epoch - 1) / config.epochs
    return config.min_lr + (config.learning_rate - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclasses.dataclass
class LoopState:
    """Everything besides variables that a resumed run needs to continue exactly."""

    epoch: int = 0                      # finished epochs
    learning_rate: float = None
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    plateau_best: float = float("inf")
    plateau_wait: int = 0
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)

    def update_schedule(self, val_loss, config, min_delta=1e-4):
        """After an epoch: the next epoch's learning rate (ReduceLROnPlateau on the validation loss,
        or cosine) and early stopping; returns whether the validation loss improved."""
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch = val_loss, self.epoch
        if config.lr_schedule == "cosine":
            self.learning_rate = cosine_learning_rate(config, self.epoch + 1)
        elif val_loss < self.plateau_best - min_delta:
            self.plateau_best, self.plateau_wait = val_loss, 0
        else:
            self.plateau_wait += 1
            if self.plateau_wait >= config.lr_patience and self.learning_rate > config.min_lr:
                self.learning_rate = max(self.learning_rate * config.lr_factor, config.min_lr)
                self.plateau_wait = 0
        patience = config.early_stopping_patience
        self.stopped_early = bool(patience) and self.epoch - self.best_epoch >= patience
        return improved


class Trainer:
    """Builds data, model and optimiser for a config; `fit` runs the epochs, `finish` evaluates and
    exports the best model."""

    def __init__(self, config, output_dir, resume=False, overwrite=False, log=None):
        self.strategy = make_strategy(config.strategy)          # first: before TensorFlow's first op
        self.chief = is_chief(self.strategy)
        check_config(config)
        self.config = config
        self.run_dir = Path(output_dir)
        if not self.chief:
            output_dir = worker_dir(output_dir, resume)
        self.out = check_run_dir(output_dir, config, resume, overwrite)
        self.log = log or (lambda msg: print(msg, flush=True))
        keras.utils.set_random_seed(config.seed)
        keras.mixed_precision.set_global_policy(config.precision)

        manifest_path = self.out / "splits.json" if resume and (self.out / "splits.json").exists() else config.manifest
        manifest = mdata.read_manifest(manifest_path) if manifest_path else None
        self.log(f"loading {config.dataset} at {config.image_size}x{config.image_size} ...")
        self.modalities = mdata.load_experiment(config.dataset, config.image_size, config.seed, config.data_dir,
                                                manifest=manifest, skip_bad=config.skip_bad_images,
                                                manifest_name=f"split manifest {str(manifest_path)!r}",
                                                split_protocol=config.split_protocol, streaming=config.streaming)
        self.lock = start_run_dir(self.out, config, overwrite)    # only now: a failed load leaves no run behind
        mdata.write_manifest(self.out / "splits.json", mdata.manifests(self.modalities))
        self.tasks = [m.task for m in self.modalities]
        if config.loss_weights is not None and len(config.loss_weights) != len(self.tasks):
            raise RunError(f"loss_weights={config.loss_weights}: expected one weight per task {self.tasks}")
        self.loss_weights = (dict(zip(self.tasks, map(float, config.loss_weights)))
                             if config.loss_weights else {t: 1.0 / len(self.tasks) for t in self.tasks})
        for m in self.modalities:
            sizes = {s: len(m.labels[s]) for s in m.labels}
            self.log(f"  {m.task}: {m.num_classes} classes {m.class_names}; images {sizes}")

        with self.strategy.scope():
            try:
                self.model = config.build_model({m.task: m.num_classes for m in self.modalities})
            except ValueError as e:
                raise RunError(str(e)) from None
            configure_batch_norm(self.model, self.strategy.num_replicas_in_sync > 1, config.bn_momentum)
            self.optimizer = make_optimizer(config, self.model)
            self.optimizer.build(self.model.trainable_variables)
            self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        penalty = l2_penalty(self.model, config.l2) if config.l2 else None
        self.train_step = make_train_step(self.model, self.optimizer, self.loss_weights, config.jit_compile,
                                          self.strategy, penalty, adversarial=config.attack(),
                                          clean_weight=config.adv_clean_weight, seed=config.seed,
                                          average=self.average)
        self.predict = make_distributed_predict_fn(self.model, self.strategy)

        self.state = LoopState(learning_rate=config.learning_rate)
        if resume and (self.out / CHECKPOINT).exists():
            saved = load_checkpoint(self.out, self.model, self.optimizer, self.average)
            recover_best(self.out, saved)
            self.state = LoopState(**saved)
            self.log(f"resumed from {self.out / CHECKPOINT} after epoch {self.state.epoch}")
        self._set_learning_rate(self.state.learning_rate)

    # -- evaluation -------------------------------------------------------------------------------
    def predict_split(self, split):
        """{task: (labels, logits)} over every image of `split`, each task scored once."""
        out = {}
        datasets = mdata.eval_datasets(self.modalities, split, self.config.batch_size, self.config.seed)
        for task, ds in datasets.items():
            labels, logits = [], []
            for images, y in self.strategy.experimental_distribute_dataset(ds.with_options(DATA_OPTIONS)):
                batch_logits, batch_labels = self.predict(images, y)
                logits.append(batch_logits[task].astype(np.float32))
                labels.append(batch_labels[task])
            out[task] = (np.concatenate(labels), np.concatenate(logits))
        return out

    def evaluate(self, split):
        """(TMTL-weighted loss, {task: metrics incl. its loss}) on `split`."""
        per_task, loss = {}, 0.0
        for m, (task, (labels, logits)) in zip(self.modalities, self.predict_split(split).items()):
            probabilities = tf.nn.softmax(logits).numpy()
            per_task[task] = classification_metrics(labels, probabilities, m.class_names)
            per_task[task]["loss"] = cross_entropy(labels, logits)
            loss += self.loss_weights[task] * per_task[task]["loss"]
        return loss, per_task

    # -- training ---------------------------------------------------------------------------------
    def _set_learning_rate(self, lr):
        self.optimizer.learning_rate = lr

    def fit(self):
        config, state = self.config, self.state
        writer = tf.summary.create_file_writer(str(self.out / "tensorboard"))
        steps = None
        while state.epoch < config.epochs and not state.stopped_early:
            epoch = state.epoch + 1
            ds = mdata.train_dataset(self.modalities, config.batch_size, config.seed, config.paper_augment,
                                     config.random_augment, epoch=epoch, shuffle_pairs=config.shuffle_pairs)
            steps = steps or int(ds.cardinality())
            self.log(f"epoch {epoch}/{config.epochs}  lr {state.learning_rate:.2g}")
            bar = progress_bar(steps)
            start, total, seen = time.time(), 0.0, 0
            for i, (images, labels) in enumerate(self.strategy.experimental_distribute_dataset(ds.with_options(DATA_OPTIONS))):
                loss = float(self.train_step(images, labels))
                if not np.isfinite(loss):
                    raise FloatingPointError(f"epoch {epoch} step {i + 1}: the training loss is {loss}; lower "
                                             f"the learning rate (now {state.learning_rate})")
                total, seen = total + loss, seen + 1
                bar.update(i + 1, [("loss", loss)])
            train_time = time.time() - start
            with self._validated_weights():
                val_loss, val = self.evaluate("val")
                state.epoch = epoch
                improved = state.update_schedule(val_loss, config)
                if improved:    # renamed to best.weights.h5 once the checkpoint records this epoch
                    self.model.save_weights(self.out / BEST_PENDING)
            record = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
                      "learning_rate": float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)), "train_seconds": train_time,
                      "val": {t: _summary(v) for t, v in val.items()}}
            record.update(noise_weights(self.model))
            state.history.append(record)
            self._set_learning_rate(state.learning_rate)
            self.log(f"  train loss {record['train_loss']:.4f}  val loss {val_loss:.4f}  " + "  ".join(
                f"{t} acc {v['accuracy']:.3f} auc {_fmt(v['auc'])}" for t, v in val.items())
                + (f"  MAN delta mean {record['man_delta']['mean']:.3g} min {record['man_delta']['min']:.3g}"
                   if "man_delta" in record else "")
                + f"  ({train_time:.0f} s){'  *best*' if improved else ''}")
            with writer.as_default(step=epoch):
                tf.summary.scalar("loss/train", record["train_loss"])
                tf.summary.scalar("loss/val", val_loss)
                tf.summary.scalar("learning_rate", record["learning_rate"])
                for t, v in val.items():
                    for name in ("accuracy", "macro_f1", "auc"):
                        if v[name] is not None:
                            tf.summary.scalar(f"val_{name}/{t}", v[name])
            writer.flush()
            save_checkpoint(self.out, self.model, self.optimizer, dataclasses.asdict(state), self.average)
            commit_best(self.out)
            plot_history(state.history, self.tasks, self.out / "curves.png")
        if state.stopped_early:
            self.log(f"early stopping after epoch {state.epoch}: no better validation loss since epoch "
                     f"{state.best_epoch}")
        return state

    def _validated_weights(self):
        """The weights an epoch is judged and kept by: the average's with --ema_decay, else the model's."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()


class PlainProgress:
    """Progress for a log file: a plain line (no ANSI codes, no carriage returns) every `interval`
    seconds and at the end."""

    def __init__(self, total, interval=30.0, out=None):
        self.total, self.interval, self.out = total, interval, out or sys.stdout
        self.start = self.last = time.time()

    def update(self, current, values=()):
        now = time.time()
        if now - self.last < self.interval and current != self.total:
            return
        self.last = now
        rate = (now - self.start) / max(current, 1)
        shown = "  ".join(f"{name} {value:.4f}" for name, value in values)
        eta = "" if current == self.total else f"  ETA {rate * (self.total - current):.0f} s"
        print(f"  step {current}/{self.total}  {shown}  {rate:.2f} s/step{eta}", file=self.out, flush=True)


def progress_bar(total):
    """Keras's redrawn bar on a terminal; plain lines every 30 s when stdout is a file or pipe."""
    if sys.stdout.isatty():
        return keras.utils.Progbar(total, unit_name="step", interval=0.2)
    return PlainProgress(total)


def noise_weights(model):
    """{"man_delta": {mean, min, max}} over every MAN delta of `model` ({} without MAN): whether the
    noise is still alive (delta -> 0 switches it off)."""
    deltas = [layer.delta.numpy().ravel() for layer in noise_layers(model)]
    if not deltas:
        return {}
    values = np.concatenate(deltas)
    return {"man_delta": {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}}


def _summary(metrics):
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "auc", "loss") if k in metrics}


def _fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


def finish(trainer):
    """Evaluate the best weights on validation and test, save model.keras, export, write metrics.json."""
    from mail_tf.export import export_serving

    out, state = trainer.out, trainer.state
    if (out / BEST).exists():
        trainer.model.load_weights(out / BEST)
    results = {}
    for split in ("val", "test"):
        loss, per_task = trainer.evaluate(split)
        results[split] = {"loss": loss, **per_task}
    trainer.model.save(out / "model.keras")
    export_serving(trainer.model, out / "export", {m.task: m.class_names for m in trainer.modalities},
                   trainer.config.image_size)
    metrics = {"dataset": trainer.config.dataset, "model": trainer.config.model, "epochs_run": state.epoch,
               "best_epoch": state.best_epoch, "stopped_early": state.stopped_early, **results,
               "history": state.history}
    leakage = {m.task: m.leakage for m in trainer.modalities if m.leakage}
    if leakage:          # split_protocol=notebook: what the test split shares with training
        metrics["leakage"] = leakage
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    trainer.lock.release()
    return metrics
