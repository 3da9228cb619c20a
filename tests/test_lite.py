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


@pytest.mark.parametrize("groups,strides,shuffled", [(4, 1, False), (4, 2, True), (1, 2, True), (1, 1, False)])
def test_conv_path_equals_the_block_diagonal_one(monkeypatch, groups, strides, shuffled):
    from mail_tf.layers import conv

    layer = L.GroupedPointwiseConv2D(12, groups=groups, strides=strides, bias_initializer="random_normal")
    x = np.random.default_rng(0).random((2, 5, 5, 8), dtype=np.float32)
    layer.build(x.shape)
    if shuffled:
        layer.input_shuffle = 2
    with monkeypatch.context() as patch:      # the matmul path, which this TensorFlow would not take
        patch.setattr(conv, "grouped_conv_differentiable", lambda dtype: False)
        dense = layer(x).numpy()
    layer.as_conv = True
    np.testing.assert_allclose(layer(x).numpy(), dense, atol=1e-6)
    assert dense.shape == (2, 3 if strides == 2 else 5, 3 if strides == 2 else 5, 12)


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


def test_int8_kinds_are_builtin_close_to_float_and_per_tensor_is_smaller(tmp_path):
    keras.utils.set_random_seed(5)
    model = mail_tf.build_model("mail_rn18", TASKS, (32, 32, 3), width=0.25)
    calibration = [images(batch=8, size=32, seed=s) for s in range(2)]
    x = images(batch=4, size=32, seed=9)
    want = model(x, training=False)
    sizes = {}
    for kind in lite.FULL_INTEGER:
        path = tmp_path / f"{kind}.tflite"
        lite.export_tflite(model, path, {"derm": list("abc"), "cyto": list("xy")}, 32, kind, calibration)
        assert lite.flex_ops(path.read_bytes()) == [], kind
        sizes[kind] = path.stat().st_size
        got = lite.LiteModel(path)(x)
        for task in TASKS:   # an untrained net's logits are small: int8 keeps them to a fraction
            scale = np.abs(want[task].numpy()).max()
            assert np.abs(got[task] - want[task].numpy()).max() < 0.5 * scale + 0.05, (kind, task)
    assert sizes["int8_per_tensor"] < sizes["int8"]


def test_strip_names_keeps_the_numbers_the_io_names_and_the_alignment():
    import tensorflow as tf

    w = np.random.default_rng(0).standard_normal((1, 1, 8, 16)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec((None, 4, 4, 8), tf.float32, name="scan")])
    def f(x):
        return {"logits": tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, w, 1, "VALID")), axis=(1, 2))}

    content = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    stripped = lite.strip_names(content)
    assert len(stripped) < len(content)
    before, after = lite.interpreter(content), lite.interpreter(stripped)
    x = np.random.default_rng(1).random((1, 4, 4, 8), dtype=np.float32)
    outs = []
    for it in (before, after):
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outs[1], outs[0])
    assert [d["name"] for d in after.get_input_details()] == [d["name"] for d in before.get_input_details()]
    assert after.get_signature_list() == before.get_signature_list()
    named = [d["name"] for d in after.get_tensor_details() if d["name"]]
    assert len(named) == 2, named      # the input and the output only
    from tensorflow.lite.python import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(bytearray(stripped), 0)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            assert buffer._tab.Vector(buffer._tab.Offset(4)) % 16 == 0


def test_int8_keeps_per_channel_scales_only_for_kernels_whose_channels_differ_in_range():
    keras.utils.set_random_seed(6)
    x_in = keras.Input((8, 8, 3), name="derm_image")
    bias = keras.initializers.RandomUniform(0.0, 0.5)
    even = keras.layers.Conv2D(16, 3, padding="same", name="even", bias_initializer=bias)(x_in)
    uneven = keras.layers.Conv2D(16, 1, name="uneven", bias_initializer=bias)(even)
    logits = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(uneven))
    model = keras.Model(x_in, {"derm": logits})
    kernel, b = model.get_layer("uneven").get_weights()
    kernel[..., :8] *= 0.02                    # half the channels ~50x smaller than the rest
    model.get_layer("uneven").set_weights([kernel, b])
    rng = np.random.default_rng(0)
    calibration = [[rng.random((16, 8, 8, 3), dtype=np.float32)] for _ in range(2)]
    x = [rng.random((6, 8, 8, 3), dtype=np.float32)]
    want = model(x, training=False)["derm"].numpy()
    content = lite.convert(model, "int8", calibration, per_tensor_tolerance=0.0)   # every scale per channel
    mixed, counts = lite.per_tensor_where_close(content)
    assert lite.convert(model, "int8", calibration) == mixed
    assert counts == {"per_tensor": 2, "per_channel": 1}      # `even` and `head` take one scale
    assert len(mixed) < len(content) and lite.flex_ops(mixed) == []
    assert lite.per_tensor_where_close(content, tolerance=10.0)[1] == {"per_tensor": 3, "per_channel": 0}
    error = {name: np.abs(lite.LiteModel(c)(x)["output_0"] - want).max() for name, c in
             [("int8", content), ("mixed", mixed)]}
    assert error["mixed"] < 2 * error["int8"] + 0.01 * np.abs(want).max(), error
    # Kernels and their int32 biases moved to one scale keep their real values to half its step.
    (before, schema), (after, _) = lite._read(content), lite._read(mixed)
    moved = 0
    for old, new in zip(before.subgraphs[0].tensors, after.subgraphs[0].tensors):
        if len(old.quantization.scale if old.quantization and old.quantization.scale is not None else []) < 2:
            continue
        if len(new.quantization.scale) == 1:
            dtype = np.int8 if old.type == schema.TensorType.INT8 else np.int32
            shape = [1] * len(old.shape)
            shape[old.quantization.quantizedDimension] = -1
            real = lite._buffer(before, old, dtype) * np.reshape(old.quantization.scale, shape)
            step = new.quantization.scale[0]
            assert np.abs(lite._buffer(after, new, dtype) * step - real).max() <= step / 2 * (1 + 1e-6)
            moved += 1
    assert moved == 3          # even's kernel and bias, head's kernel (its zero bias has no scales)
    assert lite.per_tensor_where_close(content, 0.0)[1] == {"per_tensor": 0, "per_channel": 3}
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        lite.per_tensor_where_close(content, -1)
