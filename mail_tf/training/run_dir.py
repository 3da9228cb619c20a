"""The run directory: what may be reused, overwritten or resumed, one writer at a time, and files a
killed process cannot leave half-written or inconsistent.

A run directory holds a marker (proof that --overwrite may clear it) and only the files in
RUN_FILES. The checkpoint is written atomically (`checkpoint.save`) and the previous one is kept
as `checkpoint.prev.npz`, so a checkpoint damaged on disk names the last good epoch. A new best
model is written as `best.pending.weights.h5` and renamed to `best.weights.h5` only after the
checkpoint recording it, so the two always agree (`recover_best` finishes a rename a kill cut off).
"""

import fcntl
import json
import os
import shutil
from pathlib import Path

from mail_tf.training import checkpoint
from mail_tf.training.config import TrainConfig

MARKER = ".mail_tf_run"    # written into every run directory: proof that --overwrite may clear it
LOCK = "run.lock"          # held (flock) by the process writing the run; the kernel drops it at exit
CHECKPOINT, PREVIOUS = "checkpoint.npz", "checkpoint.prev.npz"
BEST, BEST_PENDING = "best.weights.h5", "best.pending.weights.h5"
RUN_FILES = ("config.json", "splits.json", CHECKPOINT, PREVIOUS, BEST, BEST_PENDING, "model.keras", "export",
             "metrics.json", "curves.png", "tensorboard", LOCK)


class RunError(ValueError):
    """A problem with the run's settings or output directory, stated in one line."""

def check_run_dir(output_dir, config, resume=False, overwrite=False):
    """Check that the run directory may be used (nothing is written or deleted here). Reusing one
    that holds a run must be explicit, and --overwrite only ever clears a run directory holding
    nothing but what a run writes."""
    out = Path(output_dir)
    if resume and overwrite:
        raise RunError("resume and overwrite exclude each other")
    existing = out / "config.json"
    if resume:
        if not existing.exists():
            raise RunError(f"--resume: {out} holds no run (no config.json)")
        saved = TrainConfig.from_dict(json.loads(existing.read_text()))
        diff = config.differences(saved)
        if diff:
            listed = ", ".join(f"{k}={new!r} (run has {old!r})" for k, (new, old) in diff.items())
            raise RunError(f"--resume: settings differ from the run in {out}: {listed}")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            what = "a run" if existing.exists() else "other files"
            raise RunError(f"output directory {out} already holds {what}; pass --resume to continue "
                           f"it or --overwrite to replace it")
        if not (out / MARKER).exists() and not existing.exists():
            raise RunError(f"--overwrite: {out} is not a run directory (no {MARKER} or config.json); "
                           f"refusing to delete anything in it")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES + (MARKER,))
        if foreign:
            raise RunError(f"--overwrite: {out} holds files no run wrote ({', '.join(foreign[:5])}); "
                           f"refusing to delete anything in it")
    return out


def start_run_dir(out, config, overwrite=False):
    """Lock the checked run directory (RunError if another process holds it), clear it when
    overwriting (only the files a run writes), then write the marker and config.json. Called once the
    data has loaded, so a failed load leaves nothing behind. Returns the lock."""
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    if overwrite:
        for name in RUN_FILES + (MARKER,):
            if name == LOCK:
                continue
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    (out / MARKER).write_text("a mail-tf run directory (experiments.train); --overwrite may clear it\n")
    (out / "config.json").write_text(config.to_json() + "\n")
    return lock


class RunLock:
    """An exclusive lock on a run directory for this process's lifetime (or until `release`).

    flock, not a pid file: a killed process's lock vanishes with it, so a stale lock never blocks;
    the pid written into the file only names the holder in the error.
    """

    def __init__(self, out):
        self.path = Path(out) / LOCK
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunError(f"{out} is in use by {holder}; wait for that run to end (or stop it) before "
                           "resuming or overwriting it") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"process {os.getpid()}\n")
        self.file.flush()

    def release(self):
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def load_checkpoint(out, model, optimizer, average=None):
    """The saved loop state, after restoring the variables; a damaged checkpoint is one clear error
    naming the last good one."""
    try:
        return checkpoint.load(out / CHECKPOINT, model, optimizer, average)
    except checkpoint.CorruptCheckpoint as e:
        way_out = "start over with --overwrite"
        previous = out / PREVIOUS
        if previous.exists():
            try:
                epoch = checkpoint.read_state(previous)["epoch"]
                way_out = (f"the last good checkpoint is {PREVIOUS} (epoch {epoch}): move it to {CHECKPOINT} "
                           f"and --resume again, or {way_out}")
            except checkpoint.CorruptCheckpoint:
                pass
        raise RunError(f"{e}; {way_out}") from None


def save_checkpoint(out, model, optimizer, state, average=None):
    """Keep the current checkpoint as the previous one, then write the new one atomically."""
    if (out / CHECKPOINT).exists():
        os.replace(out / CHECKPOINT, out / PREVIOUS)
    checkpoint.save(out / CHECKPOINT, model, optimizer, state, average)


def commit_best(out):
    """After the checkpoint that records a new best epoch: make its weights the best ones."""
    if (out / BEST_PENDING).exists():
        os.replace(out / BEST_PENDING, out / BEST)


def recover_best(out, state):
    """On resume: a pending best written by the epoch the checkpoint ends with is committed (the
    kill came between checkpoint and rename); one from an epoch the checkpoint never recorded is
    dropped with that epoch."""
    pending = out / BEST_PENDING
    if pending.exists():
        if state.get("best_epoch") == state.get("epoch"):
            os.replace(pending, out / BEST)
        else:
            pending.unlink()


class RunDir:
    """A finished run directory of experiments.train, for the entry points that read one: its config,
    split manifest, model and data. A missing file is one FileNotFoundError line naming it and `what`
    (the flag that named the directory)."""

    def __init__(self, path, what="--run", needs=("model.keras",)):
        self.path, self.what = Path(path), what
        for name in (*needs, "config.json", "splits.json"):
            self._require(name)
        self.config = TrainConfig.from_dict(json.loads((self.path / "config.json").read_text()))

    def _require(self, name):
        if not (self.path / name).exists():
            raise FileNotFoundError(f"{self.what} {self.path}: {name} is missing; expected a finished run "
                                    f"directory of experiments.train")
        return self.path / name

    @property
    def manifest(self):
        from mail_tf.data import read_manifest

        return read_manifest(self.path / "splits.json")

    def load_model(self):
        """The saved model (model.keras): the run's best weights, as exported."""
        import keras

        import mail_tf  # noqa: F401  (registers the layers)

        return keras.saving.load_model(self._require("model.keras"))

    def rebuild(self, num_classes, **build_options):
        """The run's architecture built again from its config (its model_options, plus
        `build_options` such as mc_dropout=True) with its best weights (best.weights.h5)."""
        model = self.config.build_model(num_classes, **build_options)
        model.load_weights(self._require("best.weights.h5"))
        return model

    def load_data(self, dataset=None, data_dir=None):
        """The run's modalities with its own splits; `dataset` / `data_dir` override the config's
        (the same images elsewhere, or another experiment split by the same manifest)."""
        from mail_tf.data import load_experiment

        c = self.config
        return load_experiment(dataset or c.dataset, c.image_size, c.seed, data_dir or c.data_dir,
                               manifest=self.manifest, split_protocol=c.split_protocol)
