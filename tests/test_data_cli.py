import json
import subprocess
import sys

from conftest import assert_refused


def test_data_cli_writes_manifest_and_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.data", "--dataset", "medmnist", "--image_size", "32",
                           "--batches", "3", "--batch_size", "16", "--out", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["tasks"]["breastmnist"]["counts"]["test"] == {"malignant": 42, "normal, benign": 114}
    assert report["train_pipeline_pairs_per_s"] > 0
    manifest = json.loads((tmp_path / "splits.json").read_text())
    assert len(manifest["pneumoniamnist"]["train"]) == 4708
    assert "pneumoniamnist: 2 classes" in proc.stdout
    # The manifest is reusable and reproduces the split.
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "experiments.data", "--manifest", str(tmp_path / "splits.json"),
                    "--image_size", "32", "--batches", "0", "--output_dir", str(again)], check=True,
                   capture_output=True)
    assert json.loads((again / "splits.json").read_text()) == manifest


def test_data_cli_unknown_experiment_is_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.data", "--dataset", "nope"],
                          capture_output=True, text=True)
    assert_refused(proc, "error: unknown experiment 'nope'")
