"""mail_tf.profiling: kernels from a real trace, charged to op types, layers and the optimiser."""

import keras
import tensorflow as tf

from mail_tf.profiling import attribute, profile_step
from mail_tf.training.optimizers import Adam


def test_attribute_strips_keras_suffixes_and_marks_gradients():
    classes = {"stage1_block1": "ERLA", "gpc": "GroupedPointwiseConv2D"}
    assert attribute("mail_1/stage1_block1_1/gpc_2/MatMul", classes, "adam") == ("GroupedPointwiseConv2D", False)
    assert attribute("gradient_tape/mail_1/stage1_block1_1/Relu", classes, "adam") == ("ERLA", True)
    assert attribute("adam_1/ResourceApplyAdam", classes, "adam_1") == ("optimizer", False)
    assert attribute("something/else", classes, "adam") == ("other", False)


def test_profile_of_a_train_step_names_its_layers_and_optimizer():
    keras.utils.set_random_seed(0)
    x = keras.Input((8,))
    model = keras.Model(x, keras.layers.Dense(3, name="head")(keras.layers.Dense(16, name="hidden")(x)))
    optimizer = Adam(1e-3)
    data = tf.random.stateless_normal((32, 8), seed=(1, 2))

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(batch) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    report = profile_step(step, (data,), model, steps=2, warmup=1, optimizer_name=optimizer.name)
    layers = {row["name"]: row for row in report["by_layer"]}
    assert {"Dense", "Dense (backward)", "optimizer"} <= set(layers)
    op_types = {row["name"]: row for row in report["by_op_type"]}
    assert op_types["ResourceApplyAdam"]["kernels_per_step"] == 4     # one fused Adam kernel per variable
    assert layers["optimizer"]["kernels_per_step"] < 4 * 10           # Keras's own Adam: ~25 per variable
    assert report["kernels_per_step"] == sum(row["kernels_per_step"] for row in report["by_op_type"])
    assert report["wall_ms_per_step"] > 0


def test_op_profile_cli_writes_the_breakdown_and_refuses_bad_numbers(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.op_profile", "--models", "resnet18_pair",
                           "--image_size", "32", "--batch_size", "2", "--steps", "1", "--top", "3", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(out.read_text())
    assert result["model"] == "resnet18_pair" and result["image_size"] == 32
    for phase in ("train", "predict"):
        rows = {row["name"] for row in result[phase]["by_layer"]}
        assert "Conv2D" in rows, (phase, rows)
        assert result[phase]["kernels_per_step"] > 0
    assert "optimizer" in {row["name"] for row in result["train"]["by_layer"]}
    assert "resnet18_pair train: wall" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "experiments.op_profile", "--image_size", "16"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == "error: --image_size=16: expected >= 32"
