"""experiments.sweep_plot: robust_eval's sweep reports of several models on one plot."""

import json
import subprocess
import sys

import matplotlib.image as mpimg

from conftest import assert_refused


def _report(path, model, randomized, accuracies):
    points = lambda shift: [{"value": e, "results": {t: {"robust_accuracy": a - shift, "clean_accuracy": 0.9}
                                                     for t, a in zip(("breast", "pneumonia"), acc)}}
                            for e, acc in accuracies]
    protocols = {"paper": points(0.0), "adaptive": points(0.1)}
    path.write_text(json.dumps({"model": model, "randomized": randomized, "sweeps": {"eps": protocols}}))
    return str(path)


def test_compares_reports_and_names_a_report_without_the_sweep(tmp_path):
    from experiments.sweep_plot import load_reports

    a = _report(tmp_path / "a.json", "runs/mail", False, [(0.01, (0.5, 0.4)), (0.05, (0.1, 0.0))])
    b = _report(tmp_path / "b.json", "runs/robust", True, [(0.01, (0.8, 0.7)), (0.05, (0.6, 0.5))])
    out = tmp_path / "cmp.png"
    proc = subprocess.run([sys.executable, "-m", "experiments.sweep_plot", "--out", str(out), a, b],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = mpimg.imread(out)
    assert image.shape[1] > 1.8 * image.shape[0]           # one panel per task, side by side
    assert [r["model"] for r in load_reports([a, b], "eps")] == ["runs/mail", "runs/robust"]

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"model": "runs/x", "protocols": {}}))
    bad = subprocess.run([sys.executable, "-m", "experiments.sweep_plot", "--out", str(out), a, str(plain)],
                         capture_output=True, text=True)
    assert_refused(bad, "plain.json: holds no eps sweep")
