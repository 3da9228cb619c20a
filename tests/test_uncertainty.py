"""Uncertainty measures against hand-computed values."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mail_tf import uncertainty as unc
from test_training import train_cli

PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
LABELS = np.array([0, 1, 1])


def test_entropy_mutual_information_and_variance():
    samples = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])    # 2 passes, 2 items
    mean, per_item, aggregate = unc.summarize(samples, [0, 1])
    np.testing.assert_allclose(mean, [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(per_item["predictive_entropy"], [np.log(2), np.log(2)])
    np.testing.assert_allclose(per_item["expected_entropy"], [0.0, np.log(2)], atol=1e-9)
    np.testing.assert_allclose(per_item["mutual_information"], [np.log(2), 0.0], atol=1e-9)  # disagreement only
    np.testing.assert_allclose(per_item["variance"], [[0.25, 0.25], [0.0, 0.0]])
    assert aggregate["passes"] == 2 and aggregate["count"] == 2
    with pytest.raises(ValueError, match="passes, items, classes"):
        unc.summarize(PROBS, LABELS)


def test_calibration_scores():
    # One item per bin: confidences 0.9 (right), 0.6 (wrong), 0.7 (right).
    assert unc.expected_calibration_error(PROBS, LABELS, bins=15) == pytest.approx((0.1 + 0.6 + 0.3) / 3)
    assert unc.expected_calibration_error(PROBS, LABELS, bins=1) == pytest.approx(abs(2 / 3 - (0.9 + 0.6 + 0.7) / 3))
    assert unc.negative_log_likelihood(PROBS, LABELS) == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.7)) / 3)
    assert unc.brier_score(PROBS, LABELS) == pytest.approx((0.02 + 0.72 + 0.18) / 3)
    count, conf, acc = unc.reliability(PROBS, LABELS, bins=10)
    assert count.sum() == 3 and count[8] == 1 and acc[8] == 1.0 and conf[8] == pytest.approx(0.9)


def test_reliability_plot_draws_each_filled_bin_at_its_accuracy(tmp_path):
    drawn = unc.plot_reliability({"a": (PROBS, LABELS, 0.33), "b": (PROBS[::-1], LABELS, 0.2)}, tmp_path / "r.png",
                                 bins=10)
    # a: confidences 0.6 (wrong), 0.7 (right), 0.9 (right), each alone in its bin; b: the rows
    # reversed against the same labels, every one wrong. Empty bins draw no bar.
    for task, heights in (("a", [0.0, 1.0, 1.0]), ("b", [0.0, 0.0, 0.0])):
        np.testing.assert_allclose(drawn[task][0], [0.5, 0.6, 0.8])
        np.testing.assert_allclose(drawn[task][1], heights)
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_cli_rebuilds_the_run_with_its_own_model_options(tmp_path):
    # A run trained with dropout=0: rebuilt with the preset's dropout instead, MC passes would differ
    # (mutual information > 0) on a model that has no dropout at all.
    run = tmp_path / "run"
    train_cli("--model", "resnet18_pair", "--width", "0.25", "--image_size", "32", "--batch_size", "64",
              "--epochs", "1", "--seed", "1", "--model_option", "dropout=0", "--run", str(run))
    proc = subprocess.run([sys.executable, "-m", "experiments.uncertainty", "--runs", str(run), "--passes", "3",
                           "--out", str(tmp_path / "unc")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "unc" / "uncertainty.json").read_text())
    for task, r in report["tasks"].items():
        assert r["mutual_information"] == pytest.approx(0.0, abs=1e-6), (task, r["mutual_information"])
        assert r["count"] > 0 and 0 <= r["accuracy"] <= 1
