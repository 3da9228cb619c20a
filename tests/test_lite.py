"""LiteRT export (mail_tf.lite): builtin ops only, Keras numerics, Robust-MAIL's fixed draw, bad input."""

import keras
import numpy as np
import pytest

import mail_tf
from conftest import images
from mail_tf import layers as L
from mail_tf import lite

TASKS = {"derm": 3, "cyto": 2}     # not in alphabetical order: outputs must follow the model's order


@pytest.mark.parametrize("preset", ["mail_rn18", "resnet18_pair", "drifa_net"])
def test_float32_file_has_builtin_ops_only_and_the_keras_logits(preset, tmp_path):
    keras.utils.set_random_seed(4)
    model = mail_tf.build_model(preset, TASKS, (32, 32, 3), width=0.25)
    meta = lite.export_tflite(model, tmp_path / "m.tflite", {"derm": list("abc"), "cyto": list("xy")}, 32)
    content = (tmp_path / "m.tflite").read_bytes()
    ops = lite.op_names(content)
    assert lite.flex_ops(content) == [] and "CONV_2D" in ops and "BATCH_MATMUL" not in ops, ops
    runner = lite.LiteModel(tmp_path / "m.tflite")
    assert runner.tasks == ["derm", "cyto"] and meta["fixed"] == []
    x = images(batch=3, size=32, seed=2)
    want = model(x, training=False)
    assert runner.input_names == meta["inputs"] == ["derm_image", "cyto_image"]
    got = runner(x)
    for task in TASKS:
        np.testing.assert_allclose(got[task], want[task].numpy(), atol=1e-5)
    one = runner([v[:1] for v in x])                  # another batch size
    np.testing.assert_allclose(one["derm"], want["derm"].numpy()[:1], atol=1e-5)


def test_robust_mail_exports_one_fixed_member(tmp_path):
    keras.utils.set_random_seed(4)
    model = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25)
    meta = lite.export_tflite(model, tmp_path / "r.tflite", {"derm": list("abc"), "cyto": list("xy")}, 32)
    assert meta["fixed"] == ["random projection filters frozen at their current draw", "attention noise off"]
    runner = lite.LiteModel(tmp_path / "r.tflite")
    x = images(batch=2, size=32, seed=3)
    with lite.deterministic_inference(model):          # the member exported: this draw, no noise
        want = model(x, training=False)
    got = runner(x)
    np.testing.assert_allclose(got["cyto"], want["cyto"].numpy(), atol=1e-5)
    L.redraw_random_filters(model)                     # the file does not follow the live model's draws
    np.testing.assert_allclose(runner(x)["cyto"], got["cyto"], atol=0)
    assert not np.allclose(model(x, training=False)["cyto"].numpy(), got["cyto"], atol=1e-4)


def test_per_group_path_equals_the_block_diagonal_one():
    layer = L.GroupedPointwiseConv2D(12, groups=4)
    x = np.random.default_rng(0).random((2, 5, 5, 8), dtype=np.float32)
    dense = layer(x).numpy()
    layer.per_group = True
    np.testing.assert_allclose(layer(x).numpy(), dense, atol=1e-6)


def test_bad_input_is_named(tmp_path):
    model = mail_tf.build_model("resnet18_pair", TASKS, (32, 32, 3), width=0.25)
    with pytest.raises(ValueError, match="quantize must be one of"):
        lite.convert(model, "int4")
    with pytest.raises(ValueError, match="needs a representative dataset"):
        lite.convert(model, "int8")
    lite.export_tflite(model, tmp_path / "p.tflite", {"derm": list("abc"), "cyto": list("xy")}, 32)
    runner = lite.LiteModel(tmp_path / "p.tflite")
    with pytest.raises(ValueError, match="expected 2 image batches"):
        runner(images(batch=1, size=32)[:1])
    with pytest.raises(ValueError, match=r"expected \(1, 32, 32, 3\) float32 images"):
        runner(images(batch=1, size=24))
