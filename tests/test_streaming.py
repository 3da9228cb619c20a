"""The streaming input path: image files decoded in tf.data give the in-memory path's batches."""

from pathlib import Path

import numpy as np
import pytest

from mail_tf.data import DataError, StreamedImages, eval_datasets, load_experiment, pipeline, train_dataset

FAKE = Path(__file__).parent / "data" / "tfds_fake"
SPEC = f"ham10000={FAKE / 'ham10000'},brain_mri={FAKE / 'brain_tumor_mri'}"


def test_streamed_batches_equal_the_in_memory_ones():
    memory = load_experiment(SPEC, 24, seed=1, streaming="off")
    stream = load_experiment(SPEC, 24, seed=1, streaming="on")
    assert all(isinstance(m.images["train"], StreamedImages) for m in stream)
    assert all(isinstance(m.images["train"], np.ndarray) for m in memory)
    assert [m.manifest for m in stream] == [m.manifest for m in memory]
    for split in ("train", "val", "test"):
        for a, b in zip(memory, stream):
            np.testing.assert_array_equal(b.images[split][np.arange(len(b.images[split]))], a.images[split])
    kwargs = dict(batch_size=16, seed=1, paper_augment=True, random_augment=True, epoch=0)
    for (xa, ya), (xb, yb) in zip(train_dataset(memory, **kwargs), train_dataset(stream, **kwargs), strict=True):
        for a, b in zip(xa, xb):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert all((ya[t].numpy() == yb[t].numpy()).all() for t in ya)
    for task, ds in eval_datasets(stream, "test", 8, seed=1, all_labels=True).items():
        ref = list(eval_datasets(memory, "test", 8, seed=1, all_labels=True)[task])
        got = list(ds)
        assert len(got) == len(ref) > 0
        for (xa, ya), (xb, yb) in zip(ref, got):
            for a, b in zip(xa, xb):
                np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_auto_streams_only_above_the_threshold(monkeypatch):
    monkeypatch.setattr(pipeline, "STREAM_BYTES", 10**12)
    assert isinstance(load_experiment(SPEC, 16, streaming="auto")[0].images["train"], np.ndarray)
    monkeypatch.setattr(pipeline, "STREAM_BYTES", 1000)
    assert isinstance(load_experiment(SPEC, 16, streaming="auto")[0].images["train"], StreamedImages)
    # Arrays (MedMNIST) never stream: they are in memory already.
    assert isinstance(load_experiment("medmnist", 28, streaming="on")[0].images["train"], np.ndarray)
    with pytest.raises(DataError, match="streaming='sometimes'"):
        load_experiment(SPEC, 16, streaming="sometimes")


def test_streaming_checks_every_header_before_training(tmp_path):
    root = tmp_path / "xray"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            (root / c / f"{i}.png").write_bytes((FAKE / "folder" / "cats" / f"{i}.png").read_bytes())
    (root / "b" / "9.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"9\.png: not a JPEG, PNG"):
        load_experiment(f"folder:xray={root}", 16, streaming="on")
    kept = load_experiment(f"folder:xray={root}", 16, streaming="on", skip_bad=True)[0]
    assert sum(len(v) for v in kept.labels.values()) == 19


def test_input_benchmark_measures_both_paths(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "input.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.input_benchmark", "--scales", "1,2", "--base", "40",
                           "--source_size", "16", "--image_size", "32", "--batch_size", "4", "--model", "none",
                           "--pipeline_batches", "2", "--work", str(tmp_path / "files"), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["scale"], r["images"], r["path"]) for r in rows] == [
        (1, 40, "in memory"), (1, 40, "streaming"), (2, 80, "in memory"), (2, 80, "streaming")]
    assert all(r["peak_rss_mb"] >= r["peak_rss_after_load_mb"] > 0 and r["pipeline_pairs_per_s"] > 0 for r in rows)
    assert len(list((tmp_path / "files" / "x2" / "b").rglob("*.jpg"))) == 80     # --work is kept
    assert "| 2x | 80 | streaming |" in out.with_suffix(".md").read_text()
