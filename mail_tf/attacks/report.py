"""Plots of robust accuracy against the attack budget (paper Fig. 6) from robust_eval's results."""

from mail_tf.figures import pyplot, save_figure

plt = pyplot()

AXIS = {"eps": "eps (l-inf)", "iterations": "iterations"}


def _finish(fig, axes, xlabels, path):
    for ax, xlabel in zip(axes, xlabels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def _curve(points, task):
    return [p["value"] for p in points], [p["results"][task]["robust_accuracy"] for p in points]


def sweep_tasks(report, sweep):
    """The tasks a report's `sweep` scores."""
    return list(next(iter(report["sweeps"][sweep].values()))[0]["results"])


def plot_sweeps(sweeps, path):
    """One report's sweeps ({"eps"|"iterations": {protocol: [{value, results}]}}), a panel per sweep."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.5 * len(sweeps), 4), squeeze=False)
    for ax, (name, sweep) in zip(axes[0], sweeps.items()):
        for protocol, points in sweep.items():
            for task in points[0]["results"]:
                ax.plot(*_curve(points, task), marker="o", label=f"{task} ({protocol})")
    _finish(fig, axes[0], [AXIS[name] for name in sweeps], path)


def plot_comparison(reports, labels, sweep, path):
    """Several reports' `sweep` on shared axes, one panel per task, one line per report and protocol
    (only the first protocol of a deterministic model: both give the same numbers)."""
    tasks = sweep_tasks(reports[0], sweep)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for report, label in zip(reports, labels):
        curves = report["sweeps"][sweep]
        protocols = list(curves) if report.get("randomized", True) else list(curves)[:1]
        for protocol in protocols:
            for ax, task in zip(axes[0], tasks):
                ax.plot(*_curve(curves[protocol], task), marker="o",
                        linestyle="--" if protocol == "adaptive" else "-",
                        label=label if len(protocols) == 1 else f"{label} ({protocol})")
    for ax, task in zip(axes[0], tasks):
        ax.set_title(task)
    _finish(fig, axes[0], [AXIS[sweep]] * len(tasks), path)
