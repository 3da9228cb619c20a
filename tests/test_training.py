"""The training loop end to end: kill and resume, export, predict, distribution, bad input.

The runs train a narrow plain two-branch ResNet-18 (`resnet18_pair`, width 0.25) on the embedded
MedMNIST data at 32x32 for three epochs: a few seconds an epoch, so the loop, not the model, is
what these tests exercise.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_refused

TINY = ["--model", "resnet18_pair", "--width", "0.25", "--image_size", "32", "--batch_size", "64",
        "--epochs", "3", "--early_stopping_patience", "0", "--seed", "3"]
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def train_cli(*args, check=True, **kwargs):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *args], capture_output=True, text=True,
                          **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"experiments.train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def checkpoint_arrays(run):
    with np.load(run / "checkpoint.npz") as d:
        state = json.loads(str(d["state"]))
        return state, {k: d[k] for k in d.files if k.startswith(("model/", "optimizer/", "average/"))}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted tiny run, finished: evaluated and exported."""
    out = tmp_path_factory.mktemp("runs") / "full"
    proc = train_cli(*TINY, "--run", str(out))
    return out, proc


def test_killed_run_resumes_to_the_same_weights(full_run, tmp_path):
    full, _ = full_run
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *TINY, "--run", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (out / "checkpoint.npz").exists():          # wait for the first finished epoch
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)                     # mid-way: epoch 2 is under way
    proc.wait()
    state, _ = checkpoint_arrays(out)
    assert state["epoch"] < 3

    train_cli("--output_dir", str(out), "--resume")   # its own settings; --output_dir: the old spelling
    resumed_state, resumed = checkpoint_arrays(out)
    full_state, reference = checkpoint_arrays(full)
    assert resumed_state["epoch"] == full_state["epoch"] == 3
    assert [h["epoch"] for h in resumed_state["history"]] == [1, 2, 3]
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # Same seed, same data, same machine: the same metrics.
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((full / "metrics.json").read_text())
    for split in ("val", "test"):
        for task in ("breastmnist", "pneumoniamnist"):
            assert a[split][task]["confusion_matrix"] == b[split][task]["confusion_matrix"]
            assert a[split][task]["auc"] == pytest.approx(b[split][task]["auc"], abs=1e-6)


def test_run_directory_and_reports(full_run):
    out, proc = full_run
    for name in ("config.json", "splits.json", "checkpoint.npz", "best.weights.h5", "model.keras",
                 "curves.png", "export/saved_model.pb", "export/mail_tf_serving.json"):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and len(metrics["history"]) == 3
    assert 1 <= metrics["best_epoch"] <= 3
    # The kept weights are the validated ones (with --ema_decay: the average, not the last step's).
    best = metrics["history"][metrics["best_epoch"] - 1]
    assert metrics["val"]["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    for split, sizes in (("val", {"breastmnist": 78, "pneumoniamnist": 524}),
                         ("test", {"breastmnist": 156, "pneumoniamnist": 624})):
        for task, n in sizes.items():
            m = metrics[split][task]
            assert m["count"] == n == int(np.sum(m["confusion_matrix"]))
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["auc"] <= 1 and 0 <= m["macro_f1"] <= 1
    assert "test   pneumoniamnist" in proc.stdout and "ETA" not in proc.stdout[-500:]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "resnet18_pair" and config["epochs"] == 3
    assert config["optimizer"] == "adam" and config["learning_rate"] == 1e-3      # the medmnist defaults
    assert config["bn_momentum"] == 0.9


def test_bn_settings_reach_nested_layers():
    import mail_tf
    from mail_tf.layers.walk import sublayers
    from mail_tf.training.trainer import configure_batch_norm

    model = mail_tf.build_model("mail_rn18", {"a": 2, "b": 2}, (32, 32, 3), width=0.25)
    configure_batch_norm(model, synchronized=True, momentum=0.9)
    norms = [layer for layer in sublayers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 50                  # most live inside ERLA / EMILA blocks
    assert all(n.momentum == 0.9 and n.synchronized for n in norms)


def _uint8_images(rng, n, h, w, c):
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_exported_model_matches_live_model_without_mail_tf(full_run, tmp_path):
    import mail_tf  # noqa: F401  (registers the layers for .keras loading)
    from mail_tf.data.images import to_rgb_uint8

    out, _ = full_run
    model = keras.saving.load_model(out / "model.keras")
    rng = np.random.default_rng(0)
    cases = {"same": [_uint8_images(rng, 3, 32, 32, 3), _uint8_images(rng, 3, 32, 32, 3)],
             "other": [_uint8_images(rng, 2, 57, 41, 1), _uint8_images(rng, 2, 120, 90, 3)]}
    np.savez(tmp_path / "x.npz", **{f"{k}_{i}": v for k, xs in cases.items() for i, v in enumerate(xs)})
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"d = np.load(r'{tmp_path / 'x.npz'}')\n"
        f"serve = tf.saved_model.load(r'{out / 'export'}').signatures['serving_default']\n"
        "res = {}\n"
        "for case in ('same', 'other'):\n"
        "    out = serve(breastmnist_image=d[case + '_0'], pneumoniamnist_image=d[case + '_1'])\n"
        "    res.update({case + '_' + k: v.numpy() for k, v in out.items()})\n"
        "assert 'mail_tf' not in sys.modules\n"
        f"np.savez(r'{tmp_path / 'out.npz'}', **res)\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    served = np.load(tmp_path / "out.npz")
    for case, xs in cases.items():
        live_inputs = [tf.cast(to_rgb_uint8(x, 32), tf.float32) / 255.0 for x in xs]
        live = model(live_inputs, training=False)
        for task in ("breastmnist", "pneumoniamnist"):
            expected = tf.nn.softmax(live[task]).numpy()
            np.testing.assert_allclose(served[f"{case}_{task}"], expected, atol=1e-5)
            np.testing.assert_allclose(served[f"{case}_{task}"].sum(1), 1.0, atol=1e-5)
    # At the training size the served preprocessing is exactly x / 255.
    same = model([x.astype(np.float32) / 255.0 for x in cases["same"]], training=False)
    np.testing.assert_allclose(served["same_breastmnist"], tf.nn.softmax(same["breastmnist"]).numpy(), atol=1e-5)


def test_predict_cli_on_real_files_of_different_sizes(full_run, tmp_path):
    out, _ = full_run
    skin = next((REAL_DATA / "ham10000").rglob("*.jpg"))                  # 600x450 colour
    mri = next((REAL_DATA / "brain_tumor_mri").rglob("*.jpg"))            # 512x512 grey JPEG
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", "--run", str(out), str(skin), str(mri)],
                          capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert list(result) == ["breastmnist", "pneumoniamnist"]
    assert set(result["breastmnist"]["probabilities"]) == {"malignant", "normal, benign"}
    for task, r in result.items():
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["class"] == max(r["probabilities"], key=r["probabilities"].get)
    # Averaged passes: a deterministic model gives the same probabilities with zero spread.
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", "--run", str(out), "--passes", "3",
                           str(skin), str(mri)], capture_output=True, text=True, check=True)
    averaged = json.loads(proc.stdout)
    for task, r in averaged.items():
        assert r["passes"] == 3 and set(r["std"]) == set(r["probabilities"])
        assert max(r["std"].values()) < 1e-5
        for name, p in r["probabilities"].items():
            assert p == pytest.approx(result[task]["probabilities"][name], abs=1e-5)
    bad = subprocess.run([sys.executable, "-m", "experiments.predict", "--model", str(out), str(skin)],   # old spelling
                         capture_output=True, text=True)
    assert_refused(bad, "error: the model takes 2 images")
    bad = subprocess.run([sys.executable, "-m", "experiments.predict", "--run", str(out), "--top", "-1", str(skin),
                          str(mri)], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: --top=-1: expected")
    # A grey + alpha PNG is read as grey (was a traceback).
    from PIL import Image

    grey_alpha = tmp_path / "grey_alpha.png"
    Image.open(mri).convert("LA").save(grey_alpha)
    proc = subprocess.run([sys.executable, "-m", "experiments.predict", "--run", str(out), str(skin),
                           str(grey_alpha)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grey = json.loads(proc.stdout)["pneumoniamnist"]["probabilities"]
    for name, p in grey.items():                  # the alpha channel changes nothing
        assert p == pytest.approx(result["pneumoniamnist"]["probabilities"][name], abs=0.02)


def test_litert_export_report_and_predict_cli(full_run, tmp_path):
    out, _ = full_run
    lite = tmp_path / "lite"
    proc = subprocess.run([sys.executable, "-m", "experiments.export", "--run", str(out), "--quantize", "none,int8",
                           "--out", str(lite), "--report", "--num_calibration", "64", "--num_samples", "128",
                           "--repeats", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((lite / "lite_report.json").read_text())["formats"]
    assert set(report) == {"keras", "none", "int8"}
    assert report["none"]["max_abs_logit_diff"] <= 1e-4
    assert report["int8"]["bytes"] < 0.5 * report["none"]["bytes"]
    for task, keras_scores in report["keras"]["tasks"].items():
        assert keras_scores["count"] == 128
        assert report["none"]["tasks"][task]["accuracy"] == keras_scores["accuracy"]
        assert abs(report["int8"]["tasks"][task]["accuracy"] - keras_scores["accuracy"]) <= 0.02, task
    assert "| int8" in (lite / "lite_report.md").read_text()
    meta = json.loads((lite / "full-int8.json").read_text())
    assert meta["quantize"] == "int8" and meta["tasks"] == ["breastmnist", "pneumoniamnist"] and meta["fixed"] == []

    skin = next((REAL_DATA / "ham10000").rglob("*.jpg"))
    mri = next((REAL_DATA / "brain_tumor_mri").rglob("*.jpg"))
    answers = {}
    for model in (str(out), str(lite / "full-none.tflite")):       # the same answer, the same format
        proc = subprocess.run([sys.executable, "-m", "experiments.predict", "--run", model, str(skin), str(mri)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers[model] = json.loads(proc.stdout)
    saved, tflite = answers.values()
    for task in saved:
        assert tflite[task]["class"] == saved[task]["class"]
        for name, p in saved[task]["probabilities"].items():
            assert tflite[task]["probabilities"][name] == pytest.approx(p, abs=1e-4)

    for args, message in ((["--quantize", "int4"], "--quantize=int4: expected"),
                          (["--quantize", "none,int8", "--out", str(tmp_path / "x.tflite")], "--out folder"),
                          (["--threads", "0"], "--threads=0: expected >= 1"),
                          (["--per_tensor_tolerance", "-1"], "--per_tensor_tolerance=-1.0: expected a number >= 0")):
        args = ["--run", str(out), "--out", str(tmp_path / "y")] + args
        bad = subprocess.run([sys.executable, "-m", "experiments.export", *args], capture_output=True, text=True)
        assert_refused(bad, message)


def test_explain_cli_on_split_pairs_attacked_and_on_files(full_run, tmp_path):
    out, _ = full_run
    dest = tmp_path / "explain"
    # At 32 px the stage-4 maps are 1x1: explain stage 3 (2x2) by name.
    targets = "breastmnist_stage3_block2,pneumoniamnist_stage3_block2"
    proc = subprocess.run([sys.executable, "-m", "experiments.explain", "--run", str(out), "--num", "2",
                           "--targets", targets, "--attack", "pgd", "--iters", "2", "--gallery", "1", "--out", str(dest)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads((dest / "gallery.json").read_text())["tasks"]
    for task, g in shown.items():       # one correct and one wrong pair where the first two hold them
        assert g["pairs_explained"] == 2 and len(g["correct"]) == min(1, round(2 * g["accuracy_on_them"]))
        assert len(g["wrong"]) == min(1, 2 - round(2 * g["accuracy_on_them"]))
    assert (dest / "gallery.png").stat().st_size > 10_000
    listing = json.loads((dest / "explain.json").read_text())["pairs"]
    assert [(p["pair"], p["version"].split()[0]) for p in listing] == [(0, "clean"), (1, "clean"), (0, "pgd"), (1, "pgd")]
    assert set(listing[0]["true"]) == {"breastmnist", "pneumoniamnist"}
    maps = np.load(dest / "pair_000.npz")
    assert sorted(maps.files) == sorted(["breastmnist/breastmnist", "breastmnist/pneumoniamnist", "image/breastmnist",
                                         "pneumoniamnist/breastmnist", "pneumoniamnist/pneumoniamnist",
                                         "image/pneumoniamnist"])
    for key in maps.files:
        assert maps[key].shape[:2] == (32, 32) and 0 <= maps[key].min() and maps[key].max() <= 1
    assert (dest / "pair_001_attacked.png").stat().st_size > 10_000

    skin = next((REAL_DATA / "ham10000").rglob("*.jpg"))                  # any size, colour and grey
    mri = next((REAL_DATA / "brain_tumor_mri").rglob("*.jpg"))
    proc = subprocess.run([sys.executable, "-m", "experiments.explain", "--run", str(out), "--method", "occlusion",
                           "--out", str(tmp_path / "files"), str(skin), str(mri)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.load(tmp_path / "files" / "pair_000.npz")["pneumoniamnist/pneumoniamnist"].shape == (32, 32)
    for args, message in ((["--targets", "nope,nope2"], "the model has no layer 'nope'"),
                          ([str(skin)], "the model takes 2 images, one per modality; got 1"),
                          (["--num", "0"], "--num=0: expected >= 1"),
                          (["--gallery", "2", str(skin), str(mri)], "--gallery draws evaluation pairs")):
        bad = subprocess.run([sys.executable, "-m", "experiments.explain", "--run", str(out), *args],
                             capture_output=True, text=True)
        assert_refused(bad, message)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "error: unknown experiment 'nope'"),
    (["--dataset", "ham10000=/nonexistent/ham"], "/nonexistent/ham"),
    (["--image_size", "16"], "error: image_size=16 is too small"),
    (["--loss_weights", "0.5,heavy"], "error: --loss_weights=0.5,heavy: expected a comma-separated list"),
])
def test_bad_settings_are_one_clear_line(args, message, tmp_path):
    proc = train_cli(*args, "--run", str(tmp_path / "run"), check=False)
    assert_refused(proc, message)
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1


def test_reusing_a_run_directory_must_be_explicit(full_run, tmp_path):
    from mail_tf.training import RunError, TrainConfig
    from mail_tf.training.run_dir import LOCK, MARKER, check_run_dir, start_run_dir

    out, _ = full_run
    proc = train_cli(*TINY, "--run", str(out), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"output directory {out} already holds a run; pass --resume" in proc.stderr
    other = TrainConfig.for_experiment("medmnist", model="resnet18_pair", image_size=48)
    with pytest.raises(RunError, match=r"settings differ from the run .*image_size=48 \(run has 32\)"):
        check_run_dir(out, other, resume=True)
    assert (out / MARKER).exists()
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("keep me")
    with pytest.raises(RunError, match="not a run directory"):
        check_run_dir(stranger, other, overwrite=True)
    (stranger / "config.json").write_text("{}")     # a source folder that happens to hold a config.json
    with pytest.raises(RunError, match=r"holds files no run wrote \(thesis.tex\)"):
        check_run_dir(stranger, other, overwrite=True)
    assert (stranger / "thesis.tex").exists() and (stranger / "config.json").exists()
    run = tmp_path / "old_run"                      # a run directory is cleared of what a run wrote only
    (run / "tensorboard").mkdir(parents=True)
    for name in (MARKER, "config.json", "metrics.json", "curves.png"):
        (run / name).write_text("old")
    start_run_dir(check_run_dir(run, other, overwrite=True), other, overwrite=True).release()
    assert sorted(p.name for p in run.iterdir()) == sorted([MARKER, "config.json", LOCK])
    assert json.loads((run / "config.json").read_text())["image_size"] == 48


def test_one_writer_per_run_and_a_damaged_checkpoint_names_the_last_good_one(full_run, tmp_path):
    from mail_tf.training.run_dir import RunLock

    out = tmp_path / "copy"
    shutil.copytree(full_run[0], out)
    lock = RunLock(out)                       # this process is "still training" it
    proc = train_cli("--run", str(out), "--resume", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{out} is in use by process {os.getpid()}; wait for that run to end" in proc.stderr
    lock.release()

    data = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(data[: len(data) // 2])         # truncated on disk
    proc = train_cli("--run", str(out), "--resume", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "checkpoint.npz is corrupt or truncated (BadZipFile" in proc.stderr
    assert "the last good checkpoint is checkpoint.prev.npz (epoch 2): move it to checkpoint.npz" in proc.stderr


def test_a_best_model_counts_only_once_its_checkpoint_does(tmp_path):
    from mail_tf.training.run_dir import BEST, BEST_PENDING, recover_best

    for state, kept in (({"epoch": 4, "best_epoch": 4}, "new"), ({"epoch": 3, "best_epoch": 2}, "old")):
        (tmp_path / BEST).write_text("old")
        (tmp_path / BEST_PENDING).write_text("new")     # killed between the weights and the checkpoint's rename
        recover_best(tmp_path, state)
        assert (tmp_path / BEST).read_text() == kept and not (tmp_path / BEST_PENDING).exists()


def test_a_failed_data_load_leaves_no_run_behind(tmp_path):
    out = tmp_path / "run"
    proc = train_cli("--dataset", f"folder:={tmp_path / 'no_such_data'}", "--model", "resnet18_pair", "--width", "0.25",
                     "--image_size", "32", "--run", str(out), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not (out / "config.json").exists()


def test_experiment_defaults_and_flag_overrides():
    from mail_tf.training import TrainConfig

    c = TrainConfig.for_experiment("medmnist", epochs=5)
    assert (c.image_size, c.epochs, c.learning_rate, c.paper_augment) == (48, 5, 1e-3, False)
    general = TrainConfig.for_experiment("sipakmed", optimizer="sgd")
    assert (general.image_size, general.learning_rate, general.paper_augment) == (128, 1e-3, True)
    with pytest.raises(ValueError, match="optimizer='rmsprop': expected one of"):
        TrainConfig(optimizer="rmsprop")


def test_learning_rate_schedules_and_early_stopping():
    from mail_tf.training import TrainConfig
    from mail_tf.training.trainer import LoopState

    def run(config, losses):
        state, rates = LoopState(learning_rate=config.learning_rate), []
        for epoch, loss in enumerate(losses, 1):
            state.epoch = epoch
            state.update_schedule(loss, config)
            rates.append(state.learning_rate)
        return state, rates

    cosine = TrainConfig(epochs=4, learning_rate=1e-3, min_lr=1e-6, lr_schedule="cosine")
    _, rates = run(cosine, [1.0, 0.9, 0.8, 0.7])
    expected = [1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in (1, 2, 3, 4)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)       # the rate of the next epoch
    plateau = TrainConfig(learning_rate=1e-3, lr_patience=2, lr_factor=0.1, early_stopping_patience=3)
    state, rates = run(plateau, [1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6])
    assert np.allclose(rates, [1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5])
    assert (state.best_epoch, state.best_val_loss, state.stopped_early) == (4, 0.5, True)


MIRRORED = r"""
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import mail_tf
from mail_tf.training import make_train_step
from mail_tf.training.averaging import WeightAverage
from mail_tf.training.trainer import configure_batch_norm

keras.utils.set_random_seed(0)
tasks = {"a": 3, "b": 2}
rng = np.random.default_rng(0)
x = tuple(rng.random((8, 32, 32, 3), dtype=np.float32) for _ in range(2))
y = {"a": rng.integers(0, 3, 8), "b": rng.integers(0, 2, 8)}
ds = tf.data.Dataset.from_tensors((x, y))

def one_step(strategy):
    with strategy.scope():
        model = mail_tf.build_model("mail_rn18", tasks, (32, 32, 3), width=0.25, dropout=0.0)
        model.set_weights(initial)
        configure_batch_norm(model, synchronized=strategy.num_replicas_in_sync > 1)
        opt = keras.optimizers.SGD(0.1)
        average = WeightAverage(model, 0.99)
    step = make_train_step(model, opt, strategy=strategy, average=average)
    images, labels = next(iter(strategy.experimental_distribute_dataset(ds)))
    before = [v.numpy() for v in average.targets]
    loss = float(step(images, labels))
    # After the first step the average's decay is min(0.99, 2/11).
    expected = [2 / 11 * b + 9 / 11 * v.numpy() for b, v in zip(before, average.targets)]
    error = max(float(np.abs(a.numpy() - e).max()) for a, e in zip(average.variables, expected))
    assert error < 1e-5, error
    return loss, [v.numpy() for v in model.weights], [v.numpy() for v in average.variables]

initial = mail_tf.build_model("mail_rn18", tasks, (32, 32, 3), width=0.25, dropout=0.0).get_weights()
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
l1, w1, a1 = one_step(tf.distribute.get_strategy())
l2, w2, a2 = one_step(mirrored)
changed = max(float(np.abs(a - b).max()) for a, b in zip(w1, initial))
# Differences relative to the largest update (SGD 0.1 moves some kernels by ~3): float32 round-off
# gives 2e-4 to 2e-3 depending on the CPU's kernels (2.0e-3 on an AMX/AVX-512 host, largest in
# stage-1 depthwise kernels behind small-variance BNs); an unsynchronised BN or a wrong loss scale
# gives O(1).
worst = max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)) / changed
print(l1, l2, changed, worst)
assert changed > 1e-3, changed
# Synchronised BN takes E[x^2] - E[x]^2 over replicas: float32 round-off, not a bug.
assert abs(l1 - l2) < 1e-4 * max(1.0, abs(l1)), (l1, l2)
assert worst < 1e-2, worst
# The weight average follows the synchronised weights on both.
moved = max(float(np.abs(a - b).max()) for a, b in zip(a1, a2)) / changed
assert moved < 1e-2, moved
"""


def test_mirrored_strategy_step_equals_default_strategy():
    """Two logical CPUs: the same loss and updated weights (BN statistics synchronised)."""
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


REPLICA_DRAWS = r"""
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mail_tf.layers import AttentionNoise, Dropout, MCDropout

x = np.random.default_rng(0).random((6, 4, 4, 5)).astype(np.float32)
SPLIT = (4, 2)                  # uneven, as a last partial batch is split

def draws(strategy, dropout_cls=Dropout):
    with strategy.scope():
        layers = [dropout_cls(0.5, seed=7), MCDropout(0.5, seed=8), AttentionNoise(seed=9)]
    @tf.function
    def call(images):
        return [layers[0](images, training=True), layers[1](images), layers[2](images)]
    if strategy.num_replicas_in_sync == 1:
        return [t.numpy() for t in call(tf.constant(x))]
    starts = np.cumsum((0,) + SPLIT)
    shards = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[starts[ctx.replica_id_in_sync_group]:starts[ctx.replica_id_in_sync_group + 1]]))
    out = strategy.run(call, args=(shards,))
    return [np.concatenate([t.numpy() for t in strategy.experimental_local_results(o)]) for o in out]

one = draws(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
two = draws(mirrored)
for a, b in zip(one, two):
    assert np.array_equal(a, b), np.abs(a - b).max()
assert (one[0] == 0).mean() > 0.3 and not np.array_equal(one[0][:2], one[0][4:])
# Keras's own Dropout: each replica draws its own batch with the same seed, so the rows repeat.
keras_two = draws(mirrored, keras.layers.Dropout)[0]
assert np.array_equal(keras_two[:2] == 0, keras_two[4:] == 0) and not np.array_equal(keras_two, one[0])
"""


def test_random_layers_draw_the_same_per_example_values_on_any_number_of_replicas():
    """Dropout, MCDropout and MAN noise under MirroredStrategy (two logical CPUs, an uneven split)
    give every example the value one device gives it (`mail_tf.layers.replica_random`)."""
    proc = subprocess.run([sys.executable, "-c", REPLICA_DRAWS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_progress_in_a_log_file_is_plain_text():
    import io

    from mail_tf.training.trainer import PlainProgress

    out = io.StringIO()
    bar = PlainProgress(3, interval=0.0, out=out)
    for i in (1, 2, 3):
        bar.update(i, [("loss", 0.5 / i)])
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\b" not in text
    lines = text.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("  step 3/3  loss 0.1667") and "ETA" in lines[0]
