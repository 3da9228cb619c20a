import json

from conftest import assert_refused, cli


def test_data_cli_writes_manifest_and_report(tmp_path):
    proc = cli("experiments.data", "--dataset", "medmnist", "--image_size", 32, "--batches", 3, "--batch_size", 16,
               "--out", tmp_path, check=True)
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["tasks"]["breastmnist"]["counts"]["test"] == {"malignant": 42, "normal, benign": 114}
    assert report["train_pipeline_pairs_per_s"] > 0
    manifest = json.loads((tmp_path / "splits.json").read_text())
    assert len(manifest["pneumoniamnist"]["train"]) == 4708
    assert "pneumoniamnist: 2 classes" in proc.stdout
    # The manifest is reusable and reproduces the split.
    again = tmp_path / "again"
    cli("experiments.data", "--manifest", tmp_path / "splits.json", "--image_size", 32, "--batches", 0,
        "--output_dir", again, check=True)
    assert json.loads((again / "splits.json").read_text()) == manifest


def test_data_cli_unknown_experiment_is_one_clear_line():
    assert_refused(cli("experiments.data", "--dataset", "nope"), "error: unknown experiment 'nope'")
