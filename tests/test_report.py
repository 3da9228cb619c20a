"""experiments.report: runs grouped by settings, averaged over seeds only, tables and plots."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mail_tf import results
from mail_tf.training import TrainConfig


def _run(root, name, seed, accuracy, dataset="medmnist", **settings):
    """A finished run directory as experiments.train leaves it (config.json, metrics.json)."""
    folder = root / name
    folder.mkdir(parents=True)
    config = TrainConfig(dataset=dataset, model="mail_rn18", width=0.25, image_size=32, epochs=2, seed=seed,
                         **settings)
    (folder / "config.json").write_text(config.to_json())
    task = {"accuracy": accuracy, "macro_f1": accuracy - 0.1, "auc": None if dataset == "other" else accuracy + 0.05,
            "class_names": ["a", "b"]}
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_seconds": 10.0 * seed + 5,
                "val": {"t1": {"accuracy": accuracy - 0.1 / e}, "t2": {"accuracy": 0.5}}} for e in (1, 2)]
    metrics = {"dataset": dataset, "model": "mail_rn18", "epochs_run": 2, "test": {"loss": 0.3, "t1": task,
               "t2": {**task, "accuracy": 0.5}}, "history": history}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_runs_differing_only_in_seed_are_averaged_and_nothing_else(tmp_path):
    for seed, acc in ((0, 0.8), (1, 0.7), (2, 0.9)):
        _run(tmp_path / "a", f"s{seed}", seed, acc)
    _run(tmp_path / "a", "fast", 0, 0.6, learning_rate=3e-3)
    _run(tmp_path / "b", "elsewhere", 0, 0.4, dataset="other")
    runs = results.find_runs([tmp_path / "a", str(tmp_path / "b" / "*")])
    assert len(runs) == 5
    tables = results.report(runs, parameters=False)
    assert sorted(tables) == ["medmnist", "other"] and sorted(tables["medmnist"]) == ["t1", "t2"]
    rows = {r["group"]: r for r in tables["medmnist"]["t1"]}
    assert sorted(rows) == ["mail_rn18 learning_rate=0.0001", "mail_rn18 learning_rate=0.003"]
    seeds = rows["mail_rn18 learning_rate=0.0001"]
    assert seeds["runs"] == 3 and seeds["seeds"] == [0, 1, 2]
    assert seeds["accuracy"] == pytest.approx((0.8, np.std([0.8, 0.7, 0.9], ddof=1)))
    assert seeds["train_seconds"][0] == pytest.approx(np.mean([10, 30, 50]))
    assert rows["mail_rn18 learning_rate=0.003"]["accuracy"] == (pytest.approx(0.6), None)   # one run: no std
    other = tables["other"]["t1"]
    assert len(other) == 1 and other[0]["auc"] is None and other[0]["group"] == "mail_rn18"
    text = results.markdown(tables)
    assert "| mail_rn18 learning_rate=0.0001 | 3 | 2 | 32 | 0.800 ± 0.100 |" in text
    assert "| mail_rn18 | 1 | 2 | 32 | 0.400 | 0.300 | — |" in text


def test_a_setting_added_later_takes_its_default_in_older_runs(tmp_path):
    _run(tmp_path, "new", 0, 0.8, streaming="auto")
    _run(tmp_path, "streamed", 1, 0.7, streaming="on")      # the same pixels: not another experiment
    old = _run(tmp_path, "old", 2, 0.9)
    config = json.loads((old / "config.json").read_text())
    del config["streaming"], config["lr_schedule"]             # written before these settings existed
    (old / "config.json").write_text(json.dumps(config))
    rows = results.report(results.find_runs([tmp_path]), parameters=False)["medmnist"]["t1"]
    assert [(r["group"], r["runs"]) for r in rows] == [("mail_rn18", 3)]
    _run(tmp_path, "cosine", 3, 0.5, lr_schedule="cosine")    # a real difference still splits
    rows = results.report(results.find_runs([tmp_path]), parameters=False)["medmnist"]["t1"]
    assert sorted((r["group"], r["runs"]) for r in rows) == [("mail_rn18 lr_schedule=cosine", 1),
                                                              ("mail_rn18 lr_schedule=plateau", 3)]


def test_parameters_are_those_of_the_model_the_config_builds(tmp_path):
    import mail_tf

    run = results.find_runs([_run(tmp_path, "r", 0, 0.8)])[0]
    model = mail_tf.build_model("mail_rn18", {"t1": 2, "t2": 2}, (32, 32, 3), width=0.25)
    assert results.count_parameters(run, results.class_counts(run)) == model.count_params()


def test_report_cli_writes_tables_and_plots_and_names_what_is_wrong(tmp_path):
    for seed in (0, 1):
        _run(tmp_path / "runs", f"s{seed}", seed, 0.7 + 0.1 * seed)
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "experiments.report", str(tmp_path / "runs"), "--out", str(out),
                           "--noparameters"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0.750 ± 0.071" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["medmnist"]["t1"][0]["runs"] == 2
    for png in ("bars.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "empty").mkdir()
    (tmp_path / "runs" / "unfinished").mkdir()
    (tmp_path / "runs" / "unfinished" / "config.json").write_text("{}")
    for target, message in ((tmp_path / "empty", "holds no run directories"),
                            (tmp_path / "runs", "unfinished: metrics.json is missing")):
        proc = subprocess.run([sys.executable, "-m", "experiments.report", str(target), "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1] and str(target) in proc.stderr
