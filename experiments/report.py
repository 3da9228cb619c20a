"""Aggregate finished runs over seeds: a markdown table per dataset and task, and two PNGs.

  python -m experiments.report results/trainability/medmnist32 --out reports/medmnist32
  python -m experiments.report 'runs/ham*-s*' runs/other_run --out reports/ham

Each argument is a run directory of experiments.train, a folder holding run directories (searched
recursively) or a glob. Runs that differ only in their seed are one group: test ACC, macro-F1 and
AUC as mean ± std over its runs (std with ddof 1), with the number of runs, epochs, image size, mean
training time and parameter count. Runs on different datasets, tasks or settings are never
averaged; a group's label names every setting that differs between groups. Writes DIR/report.md,
DIR/report.json, DIR/bars.png (error bars over seeds) and DIR/curves.png (validation curves of every
run), and prints the tables.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.cli import refusing  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Folder to write report.md, report.json, bars.png and curves.png to.")
flags.DEFINE_bool("parameters", True, "Count each group's parameters (builds its model from the config).")


def main(argv):
    patterns = argv[1:]
    if not patterns or not FLAGS.out:
        sys.exit("error: usage: python -m experiments.report RUN_DIR_OR_GLOB [...] --out DIR")
    from mail_tf import results

    with refusing(results.ResultsError):
        runs = results.find_runs(patterns)
        tables = results.report(runs, parameters=FLAGS.parameters)
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    text = results.markdown(tables)
    (out / "report.md").write_text(f"# Results of {len(runs)} runs\n\n{text}")
    (out / "report.json").write_text(json.dumps(tables, indent=2) + "\n")
    results.plot_bars(tables, out / "bars.png")
    results.plot_curves(runs, out / "curves.png")
    print(text)
    print(f"written {out / 'report.md'}, report.json, bars.png and curves.png ({len(runs)} runs)")


if __name__ == "__main__":
    app.run(main)
