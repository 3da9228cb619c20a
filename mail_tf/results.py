"""Results of finished runs, aggregated over seeds: what `experiments.report` prints and draws.

A run directory of `experiments.train` holds config.json and metrics.json. Runs whose configs differ
only in the seed (and in where the data lived) form one group; a group's test metrics are reported
as mean ± std over its runs. Runs on different datasets, tasks or settings are never averaged.
"""

import dataclasses
import glob
import json
import math
from pathlib import Path

import numpy as np

from mail_tf.training.config import HOW_NOT_WHAT
from mail_tf.figures import pyplot, save_figure

# Config fields that do not make two runs different experiments: the seed, where the data was
# read from, and how (config.HOW_NOT_WHAT, which a resume may change too).
NOT_SETTINGS = ("seed", "data_dir", "manifest", "skip_bad_images", *HOW_NOT_WHAT)
METRICS = (("accuracy", "ACC"), ("macro_f1", "macro-F1"), ("auc", "AUC"))


class ResultsError(ValueError):
    """A path that holds no runs, or a run that cannot be reported; the message names it."""


@dataclasses.dataclass
class Run:
    path: Path
    config: dict
    metrics: dict

    @property
    def tasks(self):
        return [t for t in self.metrics["test"] if t != "loss"]

    @property
    def train_seconds(self):
        return sum(h.get("train_seconds", 0.0) for h in self.metrics.get("history", []))


def _read_run(folder):
    for name in ("config.json", "metrics.json"):
        if not (folder / name).exists():
            raise ResultsError(f"{folder}: {name} is missing; expected a finished run directory of "
                               f"experiments.train")
    try:
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
    except ValueError as e:
        raise ResultsError(f"{folder}: unreadable JSON ({e})") from None
    if "test" not in metrics:
        raise ResultsError(f"{folder}/metrics.json: no test metrics; expected a finished run")
    return Run(folder, config, metrics)


def find_runs(patterns):
    """Every run under the given directories or glob patterns (a directory holding config.json is a
    run; any other directory is searched for runs)."""
    runs, seen = [], set()
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern))) or [str(pattern)]
        found = 0
        for match in matches:
            path = Path(match)
            if not path.is_dir():
                raise ResultsError(f"{path}: not a directory of runs")
            folders = [path] if (path / "config.json").exists() else sorted(
                p.parent for p in path.rglob("config.json"))
            for folder in folders:
                if folder.resolve() not in seen:
                    seen.add(folder.resolve())
                    runs.append(_read_run(folder))
                    found += 1
        if not found:
            raise ResultsError(f"{pattern}: holds no run directories (no config.json below it)")
    return runs


def settings(run):
    """The run's settings, seed excluded: what makes two runs the same experiment. Read through
    TrainConfig, so a setting added after a run was made takes its default, the value in effect."""
    from mail_tf.training import TrainConfig

    try:
        config = dataclasses.asdict(TrainConfig.from_dict(run.config))
    except ValueError as e:
        raise ResultsError(f"{run.path}/config.json: {e}") from None
    return {k: v for k, v in config.items() if k not in NOT_SETTINGS}


def group_runs(runs):
    """{dataset: [(label, [runs])]}: runs of one dataset grouped by settings; the label names the
    model and every setting that differs between that dataset's groups."""
    by_dataset = {}
    for run in runs:
        key = json.dumps(settings(run), sort_keys=True)
        by_dataset.setdefault(run.config["dataset"], {}).setdefault(key, []).append(run)
    out = {}
    for dataset, groups in by_dataset.items():
        configs = [json.loads(k) for k in groups]
        varying = sorted(k for k in set().union(*configs) if k != "model"
                         and len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1)
        labelled = []
        for key, members in groups.items():
            c = json.loads(key)
            extra = " ".join(f"{k}={_short(c.get(k))}" for k in varying)
            labelled.append(((c["model"] + (" " + extra if extra else "")), sorted(members, key=lambda r: r.config["seed"])))
        out[dataset] = sorted(labelled)
    return out


def _short(value):
    if isinstance(value, dict):
        return ",".join(f"{k}={_short(v)}" for k, v in sorted(value.items()))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def mean_std(values):
    """(mean, std over runs with ddof 1, None for a single run); None when no value is known."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(label, runs, task, parameters=None):
    """One table row: the group's test metrics of `task` over its runs, and what they were trained with."""
    row = {"group": label, "runs": len(runs), "seeds": [r.config["seed"] for r in runs],
           "epochs": sorted({r.metrics.get("epochs_run") for r in runs}),
           "image_size": runs[0].config["image_size"], "train_seconds": mean_std([r.train_seconds for r in runs]),
           "parameters": parameters}
    for key, _ in METRICS:
        row[key] = mean_std([r.metrics["test"].get(task, {}).get(key) for r in runs])
    return row


def count_parameters(run, num_classes):
    """Parameters of the run's model (Keras's count, BN statistics included, as the README's),
    built from its config (no weights needed)."""
    from mail_tf.training import TrainConfig

    try:
        return int(TrainConfig.from_dict(run.config).build_model(num_classes).count_params())
    except ValueError as e:
        raise ResultsError(f"{run.path}/config.json: {e}") from None


def class_counts(run):
    return {t: len(run.metrics["test"][t]["class_names"]) for t in run.tasks}


def report(runs, parameters=True):
    """{dataset: {task: [rows]}} for `runs` (see `summarise`)."""
    out = {}
    for dataset, groups in group_runs(runs).items():
        tables = out.setdefault(dataset, {})
        for label, members in groups:
            params = count_parameters(members[0], class_counts(members[0])) if parameters else None
            for task in members[0].tasks:
                tables.setdefault(task, []).append(summarise(label, members, task, params))
    return out


def _fmt(ms, digits=3):
    if ms is None:
        return "—"
    mean, std = ms
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(tables):
    lines = []
    for dataset, per_task in tables.items():
        for task, rows in per_task.items():
            lines += [f"## {dataset}: {task}", "",
                      "| model and settings | runs | epochs | image size | " + " | ".join(n for _, n in METRICS)
                      + " | train time (s) | parameters |",
                      "|---|---|---|---|" + "---|" * len(METRICS) + "---|---|"]
            for r in rows:
                params = f"{r['parameters']:,}" if r["parameters"] else "—"
                time_s = "—" if r["train_seconds"] is None else f"{r['train_seconds'][0]:.0f}"
                lines.append(f"| {r['group']} | {r['runs']} | {'/'.join(map(str, r['epochs']))} | {r['image_size']} | "
                             + " | ".join(_fmt(r[k]) for k, _ in METRICS) + f" | {time_s} | {params} |")
            lines.append("")
    return "\n".join(lines)


def plot_bars(tables, path):
    """Test ACC / macro-F1 / AUC per group with the std over seeds as error bars, a row per task."""
    plt = pyplot()

    panels = [(d, t, rows) for d, per_task in tables.items() for t, rows in per_task.items()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 + 0.9 * max(len(p[2]) for p in panels) * len(panels)),
                             squeeze=False)
    for ax, (dataset, task, rows) in zip(axes[:, 0], panels):
        y = np.arange(len(rows))
        for i, (key, name) in enumerate(METRICS):
            means = [r[key][0] if r[key] else np.nan for r in rows]
            stds = [r[key][1] or 0 if r[key] else 0 for r in rows]
            ax.barh(y + (i - 1) * 0.27, means, 0.27, xerr=stds, capsize=3, label=name)
        ax.set_yticks(y, [f"{r['group']} (n={r['runs']})" for r in rows], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title(f"{dataset}: {task} (test, mean ± std over seeds)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    save_figure(fig, path, dpi=110)


def plot_curves(runs, path):
    """Validation loss and per-task validation accuracy against epoch, one line per run, one colour
    per group (a dataset per row)."""
    plt = pyplot()

    grouped = group_runs(runs)
    columns = 1 + max(len(g[0][1][0].tasks) for g in grouped.values())
    fig, axes = plt.subplots(len(grouped), columns, figsize=(5 * columns, 3.6 * len(grouped)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (dataset, groups) in zip(axes, grouped.items()):
        for g, (label, members) in enumerate(groups):
            colour = colours[g % len(colours)]
            for k, run in enumerate(members):
                history = run.metrics["history"]
                epochs = [h["epoch"] for h in history]
                name = label if k == 0 else None
                row[0].plot(epochs, [h["val_loss"] for h in history], color=colour, alpha=0.8, label=name)
                for ax, task in zip(row[1:], run.tasks):
                    ax.plot(epochs, [h["val"][task]["accuracy"] for h in history], color=colour, alpha=0.8,
                            label=name)
                    ax.set_title(f"{dataset}: {task} validation accuracy", fontsize=10)
        row[0].set_title(f"{dataset}: validation loss", fontsize=10)
        for ax in row:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)
