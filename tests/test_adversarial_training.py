"""Adversarial training and robust evaluation end to end, settings, and the randomised export."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mail_tf import layers as L
from mail_tf.export import export_serving
from test_training import train_cli

TINY_AT = ["--model", "resnet18_pair", "--width", "0.25", "--image_size", "32", "--batch_size", "64",
           "--epochs", "1", "--seed", "2", "--adversarial", "--adv_iters", "2"]


def test_adversarial_run_then_robust_eval_cli(tmp_path):
    run = tmp_path / "at"
    proc = train_cli(*TINY_AT, "--run", str(run))
    config = json.loads((run / "config.json").read_text())
    assert config["adversarial"] and config["adv_iters"] == 2 and config["adv_eps"] == pytest.approx(4 / 255)
    assert (run / "model.keras").exists() and "best epoch 1 of 1" in proc.stdout

    report = tmp_path / "robust.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.robust_eval", "--run", str(run), "--attack", "pgd",
                           "--iters", "3", "--num_samples", "40", "--batch_size", "32", "--eot", "2", "--draws", "2",
                           "--sanity_samples", "16", "--sanity_square", "--queries", "20", "--protocol", "both",
                           "--out", str(report)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(report.read_text())
    assert set(result["protocols"]) == {"paper", "adaptive"} and not result["randomized"]
    for protocol, per_task in result["protocols"].items():
        assert set(per_task) == {"breastmnist", "pneumoniamnist"}
        for task, r in per_task.items():
            assert r["count"] == 40
            assert 0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1
    paper, adaptive = result["protocols"]["paper"], result["protocols"]["adaptive"]
    for task in paper:        # a deterministic model: both protocols give the same numbers, computed once
        assert paper[task]["robust_accuracy"] == adaptive[task]["robust_accuracy"]
    assert result["seconds"]["adaptive"] == 0.0 and "computed once" in result["note"]
    assert result["attack"]["loss"] == "task"                     # the default objective
    assert "robust" in proc.stdout and "pneumoniamnist" in proc.stdout
    checks = result["sanity"]["paper"]
    assert [c["check"].split()[0] for c in checks] == ["the", "robust", "20", "Square"]
    assert checks[1]["passed"] == (max(checks[1]["detail"].values()) <= 0.05)
    for c in checks:     # a failed check is loud (a 1-epoch model may well ignore its input)
        assert c["passed"] or f"WARNING: sanity check failed: {c['check']}" in proc.stdout
    assert report.with_suffix(".md").read_text().startswith("# Robustness of")

    sweep = tmp_path / "sweep.json"         # defaults otherwise: PGD-10 on each task's own loss
    proc = subprocess.run([sys.executable, "-m", "experiments.robust_eval", "--run", str(run), "--attack", "pgd",
                           "--num_samples", "32", "--protocol", "paper", "--nosanity", "--eps_sweep",
                           "--sweep_eps", "0,0.5", "--out", str(sweep)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = json.loads(sweep.read_text())["sweeps"]["eps"]["paper"]
    assert [p["value"] for p in points] == [0.0, 0.5]
    for task, r in points[0]["results"].items():      # eps 0 changes nothing
        assert abs(r["robust_accuracy"] - r["clean_accuracy"]) <= 0.02
    # eps 0.5 leaves nothing of a head that has learned something (this one-epoch model's pneumonia
    # head). Its breast head calls ~97 % of images benign whatever they show: eps 0.5 breaks most of
    # the benign ones but not every one, and the tool's sanity check says so (above); it still breaks some.
    broken = points[1]["results"]
    assert broken["pneumoniamnist"]["robust_accuracy"] <= 0.05, broken
    assert broken["breastmnist"]["robust_accuracy"] < 0.5 * points[0]["results"]["breastmnist"]["clean_accuracy"]
    assert "eps sweep (paper) 0.5: robust accuracy" in proc.stdout and sweep.with_suffix(".png").exists()
    bad = subprocess.run([sys.executable, "-m", "experiments.robust_eval", "--run", str(run), "--eps_sweep",
                          "--sweep_eps", "0.01,big"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--sweep_eps=0.01,big: expected" in bad.stderr

    bad = subprocess.run([sys.executable, "-m", "experiments.robust_eval", "--model", str(tmp_path / "nothing")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "model.keras is missing" in bad.stderr and "Traceback" not in bad.stderr


BAD_FLAGS = [("iters", "0", "expected >= 1"), ("num_samples", "0", "expected >= 1"), ("batch_size", "0", "expected >= 1"),
             ("eps", "1.5", "expected in [0.0, 1.0]"), ("eps", "-0.1", "expected in [0.0, 1.0]"),
             ("step", "-0.01", "expected a positive step size"), ("restarts", "0", "expected >= 1"),
             ("eot", "0", "expected >= 1"), ("draws", "0", "expected >= 1")]


def test_robust_eval_range_checks_every_number_before_loading(tmp_path):
    # --model names no run: every bad number is refused before anything loads, in one clear line.
    proc = subprocess.run([sys.executable, "-m", "experiments.robust_eval", "--run", str(tmp_path / "none"),
                           "--iters=0"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: --iters=0: expected >= 1"
    script = ("import sys\nfrom experiments import robust_eval as r\nfor flag, value in " + repr(
        [(f, v) for f, v, _ in BAD_FLAGS]) + ":\n    r.FLAGS.unparse_flags()\n"
        "    r.FLAGS(['robust_eval', '--model=none', f'--{flag}={value}'])\n"
        "    try:\n        r.check_flags()\n        print('accepted', flag)\n"
        "    except ValueError as e:\n        print(e)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(BAD_FLAGS)
    for line, (flag, _, expected) in zip(lines, BAD_FLAGS):
        assert line.startswith(f"--{flag}=") and line.endswith(expected), line


def test_robust_mail_trains_adversarially_by_default_and_options_parse():
    from experiments.train import parse_model_options
    from mail_tf.training import TrainConfig

    assert TrainConfig.for_experiment("medmnist", model="robust_mail").adversarial
    assert not TrainConfig.for_experiment("medmnist", model="robust_mail", adversarial=False).adversarial
    assert not TrainConfig.for_experiment("medmnist", model="mail").adversarial
    attack = TrainConfig.for_experiment("medmnist", model="mail", adversarial=True, adv_iters=7).attack()
    assert (attack.method, attack.iters, attack.step_size) == ("pgd", 7, pytest.approx(1 / 255))
    assert parse_model_options(["rpf_ratio=0.5", "man=false", "fusion=cascaded", "man_sigma=0.3"]) == {
        "rpf_ratio": 0.5, "man": False, "fusion": "cascaded", "man_sigma": 0.3}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_model_options(["rpf_ratio"])
    with pytest.raises(ValueError, match="adv_clean_weight"):
        TrainConfig(adv_clean_weight=0.5)


def test_unknown_model_option_is_one_clear_line(tmp_path):
    proc = train_cli("--model", "mail", "--model_option", "rpf_ratio=0.5", "--run", str(tmp_path / "r"),
                     check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "model_options {'rpf_ratio': 0.5} do not fit mail" in proc.stderr


def _tiny_random_model():
    keras.utils.set_random_seed(0)
    inputs = [keras.Input((8, 8, 3), name=f"{t}_image") for t in ("a", "b")]
    outputs = {}
    for t, x in zip(("a", "b"), inputs):
        y = L.RandomProjectionDepthwiseConv2D(3, rpf_ratio=0.5, name=f"{t}_rpf")(x)
        y = keras.layers.GlobalAveragePooling2D()(y)
        outputs[t] = keras.layers.Dense(2, name=t)(y)
    return keras.Model(inputs, outputs)


def test_export_keeps_inference_randomness_and_averages_passes(tmp_path):
    model = _tiny_random_model()
    export_serving(model, tmp_path / "export", {"a": ["x", "y"], "b": ["p", "q"]}, image_size=8)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    rng = np.random.default_rng(0)
    images = [tf.constant(rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)) for _ in range(2)]
    first, second = loaded.serve(*images), loaded.serve(*images)
    assert not np.allclose(first["a"].numpy(), second["a"].numpy())          # a new draw per call
    averaged = loaded.serve_passes(*images, tf.constant(16))
    mean, std = averaged["a"].numpy(), averaged["a_std"].numpy()
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-5)
    assert (std > 0).all() and std.max() < 0.5
    one = loaded.serve_passes(*images, tf.constant(1))
    np.testing.assert_array_equal(one["a_std"].numpy(), 0.0)
    for bad in (0, -3):                       # no silent all-zero answer
        with pytest.raises(tf.errors.InvalidArgumentError, match="passes must be at least 1"):
            loaded.serve_passes(*images, tf.constant(bad))
