"""Robust accuracy against the attack budget of several models on one plot (paper Fig. 6).

  python -m experiments.sweep_plot --out sweep.png runs/mail.json runs/robust_mail.json

The reports are robust_eval's `--out` files of runs with `--eps_sweep` (or `--iters_sweep` and
`--sweep iterations` here). One panel per task, one line per report and protocol; robust_eval
already draws each report's own plot beside its JSON.
"""

import json
import sys
from pathlib import Path

from absl import app, flags

from experiments.cli import refusing

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "PNG to write.")
flags.DEFINE_enum("sweep", "eps", ["eps", "iterations"], "Which sweep of the reports to plot.")
flags.DEFINE_list("labels", None, "One label per report (default: the run directory's name).")


def load_reports(paths, sweep):
    """The JSON reports, each checked to hold `sweep` over the same tasks; one-line errors."""
    from mail_tf.attacks.report import sweep_tasks

    reports, tasks = [], None
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable robust_eval JSON report ({e})") from None
        if sweep not in report.get("sweeps", {}):
            flag = "--eps_sweep" if sweep == "eps" else "--iters_sweep"
            raise ValueError(f"{path}: holds no {sweep} sweep; run robust_eval with {flag} --out")
        these = sweep_tasks(report, sweep)
        if tasks is not None and these != tasks:
            raise ValueError(f"{path}: tasks {these} differ from the first report's {tasks}")
        tasks = these
        reports.append(report)
    return reports


def main(argv):
    paths = argv[1:]
    if not paths or not FLAGS.out:
        sys.exit("error: usage: python -m experiments.sweep_plot --out PNG REPORT.json [REPORT.json ...]")
    if FLAGS.labels and len(FLAGS.labels) != len(paths):
        sys.exit(f"error: --labels has {len(FLAGS.labels)} names for {len(paths)} reports")
    with refusing():
        reports = load_reports(paths, FLAGS.sweep)
    from mail_tf.attacks.report import plot_comparison

    plot_comparison(reports, FLAGS.labels or [Path(r["model"]).name for r in reports], FLAGS.sweep, FLAGS.out)
    print(f"written {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
