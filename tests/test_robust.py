"""Robust-MAIL: random projection filters, modulated attention noise, the builder's switches."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from mail_tf import layers as L
from mail_tf.layers import random_projection  # noqa: F401  (L.random_projection)
from conftest import TASKS, images


def _rpf_layers():
    return [L.RandomProjectionPointwiseConv2D(32, groups=16, random_ratio=0.25, seed=3),
            L.RandomProjectionDepthwiseConv2D(5, random_ratio=0.25, seed=3)]


@pytest.mark.parametrize("index", [0, 1])
def test_a_draw_is_fixed_until_redrawn_and_reproduced_by_its_seed(index):
    x = tf.random.stateless_uniform((2, 8, 8, 32), (1, 2))
    layer = _rpf_layers()[index]
    first = layer(x).numpy()
    np.testing.assert_array_equal(layer(x).numpy(), first)        # the same draw, call after call
    drawn = layer.random_kernel.numpy()
    layer.redraw()
    assert not np.allclose(layer.random_kernel.numpy(), drawn)
    assert not np.allclose(layer(x).numpy(), first)
    twin = _rpf_layers()[index]                                    # same seed -> same draws
    twin(x)
    np.testing.assert_array_equal(twin.random_kernel.numpy(), drawn)
    twin.redraw()
    np.testing.assert_array_equal(twin.random_kernel.numpy(), layer.random_kernel.numpy())


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_random_kernels_are_not_trainable_and_have_std_one_over_k(kernel_size):
    if kernel_size == 1:
        layer = L.RandomProjectionPointwiseConv2D(512, groups=16, random_ratio=0.5, seed=1)
    else:
        layer = L.RandomProjectionDepthwiseConv2D(kernel_size, random_ratio=0.5, seed=1)
    layer.build((None, 8, 8, 512))
    assert "random_kernel" not in [v.name for v in layer.trainable_weights]
    assert "random_kernel" in [v.name for v in layer.non_trainable_weights]
    values = layer.random_kernel.numpy()
    assert values.size >= 1024
    assert abs(values.std() - 1 / kernel_size) < 0.06 / kernel_size
    assert abs(values.mean()) < 0.1 / kernel_size


def test_rpf_std_scale_reaches_every_random_kernel_and_survives_a_roundtrip(tmp_path):
    kwargs = dict(width=0.25, man=False, rpf_ratio=0.5)
    plain = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), **kwargs)
    scaled = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), rpf_std_scale=0.2, **kwargs)
    layers = L.random_projection.random_projection_layers(scaled)
    assert len(layers) == len(L.random_projection.random_projection_layers(plain)) > 0
    for layer in layers:                    # ERLA's and EMSCA's MSGDCs alike
        assert layer.random_std == pytest.approx(0.2 / getattr(layer, "kernel_size", 1))
    pooled = np.concatenate([l.random_kernel.numpy().ravel() * getattr(l, "kernel_size", 1) for l in layers])
    assert abs(pooled.std() - 0.2) < 0.02
    scaled.save(tmp_path / "scaled.keras")
    loaded = keras.saving.load_model(tmp_path / "scaled.keras")
    assert {l.random_std for l in L.random_projection.random_projection_layers(loaded)} == \
        {l.random_std for l in layers}
    with pytest.raises(ValueError, match="rpf_std_scale"):
        mail_tf.build_robust_mail(TASKS, (32, 32, 3), rpf_std_scale=0.0)


def test_rpf_pointwise_spreads_random_filters_over_every_group():
    layer = L.RandomProjectionPointwiseConv2D(64, groups=16, random_ratio=0.25, seed=0)
    layer.build((None, 4, 4, 32))
    assert layer.kernel.shape == (1, 1, 2, 48) and layer.random_kernel.shape == (1, 1, 2, 16)
    layer.kernel.assign(tf.zeros_like(layer.kernel))
    full = layer.compact_kernel().numpy().reshape(2, 16, 4)        # (Cin/G, groups, filters per group)
    random = np.any(full != 0, axis=0)                             # (groups, filters per group)
    assert random.sum(axis=1).tolist() == [1] * 16                 # one random filter in every group
    # The grouped structure is kept: it equals a grouped Conv2D with the assembled kernel.
    x = tf.random.stateless_uniform((2, 4, 4, 32), (3, 4))
    conv = keras.layers.Conv2D(64, 1, groups=16)
    conv.build(x.shape)
    conv.kernel.assign(layer.compact_kernel())
    conv.bias.assign(layer.bias)
    np.testing.assert_allclose(layer(x).numpy(), conv(x).numpy(), atol=1e-5)


def test_narrow_layers_keep_trainable_filters():
    # 16 filters in 16 groups: 4 random filters, in every fourth group, 12 trainable.
    layer = L.RandomProjectionPointwiseConv2D(16, groups=16, random_ratio=0.25, seed=0)
    layer.build((None, 4, 4, 16))
    assert layer.kernel.shape[-1] == 12 and layer.random_kernel.shape[-1] == 4
    assert L.random_projection.random_positions(16, 4) == [2, 6, 10, 14]


def test_rpf_depthwise_equals_a_depthwise_conv_with_the_assembled_kernel():
    layer = L.RandomProjectionDepthwiseConv2D(3, strides=2, random_ratio=0.25, seed=0)
    x = tf.random.stateless_uniform((2, 9, 9, 16), (5, 6))
    y = layer(x)
    ref = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")
    ref.build(x.shape)
    ref.kernel.assign(layer.full_kernel())
    ref.bias.assign(layer.bias)
    assert layer.random_kernel.shape == (3, 3, 4, 1)
    np.testing.assert_allclose(y.numpy(), ref(x).numpy(), atol=1e-5)
    np.testing.assert_array_equal(layer.full_kernel().numpy()[:, :, [2, 6, 10, 14]], layer.random_kernel.numpy())


def test_gradients_reach_delta_and_the_trainable_filters_but_not_the_random_ones():
    # zero_init_residual=False: a zero last-BN scale stops the gradient into every ERLA branch until
    # the first update moves it; the wiring is what is checked here.
    model = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25, zero_init_residual=False)
    x = images(batch=2)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = sum(tf.reduce_mean(tf.square(v)) for v in out.values())
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(loss, model.trainable_variables)))
    deltas = [p for p in grads if p.endswith("/delta")]
    rpf = [p for p in grads if ("/gpc/" in p or "/dwc" in p) and p.endswith("/kernel")]
    assert len(deltas) == 44 and len(rpf) == 108             # 32 CA + 12 EMCAM maps; 36 MSGDC x 3 convs
    for p in deltas + rpf:
        assert grads[p] is not None and float(tf.reduce_sum(tf.abs(grads[p]))) > 0, p
    assert not any("random_kernel" in v.path for v in model.trainable_variables)
    # rho * (||trainable RPF kernels||^2 + ||delta||^2) is in the model's losses (Eq. 17).
    assert len(model.losses) == len(deltas) + len(rpf)


def test_all_switches_off_is_exactly_mail():
    keras.utils.set_random_seed(3)
    mail = mail_tf.build_mail(TASKS, (32, 32, 3), width=0.25)
    robust = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25, rpf_erla=False, rpf_emcam=False,
                                       man=False)
    assert [v.shape for v in robust.weights] == [v.shape for v in mail.weights]
    robust.set_weights(mail.get_weights())
    x = images(batch=2, seed=4)
    ref, out = mail(x, training=False), robust(x, training=False)
    for task in TASKS:
        np.testing.assert_array_equal(out[task].numpy(), ref[task].numpy())


def test_each_switch_adds_only_its_own_layers():
    counts = {}
    for name, switches in {"rpf_erla": (1, 0, 0), "rpf_emcam": (0, 1, 0), "man": (0, 0, 1)}.items():
        m = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25, rpf_erla=bool(switches[0]),
                                      rpf_emcam=bool(switches[1]), man=bool(switches[2]))
        counts[name] = (len(L.random_projection_layers(m)), len(L.noise_layers(m)))
    assert counts == {"rpf_erla": (96, 0), "rpf_emcam": (12, 0), "man": (0, 44)}


def test_man_noise_is_fresh_every_call_and_clipped_to_the_unit_interval():
    noise = L.AttentionNoise(sigma=0.6, initial_weight=1.0, seed=0)
    a = tf.fill((4, 1, 1, 64), 0.5)
    first, second = noise(a).numpy(), noise(a).numpy()
    assert not np.allclose(first, second)
    assert first.min() >= 0 and first.max() <= 1 and (first == 1).any() and (first < 1).any()
    # eta' = eta * (delta + eta * delta): with delta = 0 the map passes unchanged.
    noise.delta.assign(tf.zeros(64))
    np.testing.assert_array_equal(noise(a).numpy(), a.numpy())


def test_straight_through_clip_passes_gradient_where_the_plain_clip_gives_zero():
    x = tf.constant([-0.5, 0.3, 1.7])
    for straight, expected in ((False, [0.0, 1.0, 0.0]), (True, [1.0, 1.0, 1.0])):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = L.clip_unit(x, straight_through=straight)
        np.testing.assert_allclose(y.numpy(), [0.0, 0.3, 1.0], rtol=1e-6)
        np.testing.assert_array_equal(tape.gradient(y, x).numpy(), expected)


def test_straight_through_context_reaches_the_model_and_is_restored():
    model = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25, rpf_erla=False, rpf_emcam=False,
                                      man_sigma=3.0)     # large noise: many saturated entries
    x = [tf.constant(v) for v in images(batch=2)]

    def input_grad_norm():
        keras.utils.set_random_seed(5)      # the same noise in both runs
        for layer in L.noise_layers(model):
            layer.seed_generator.state.assign([5, 0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = sum(tf.reduce_sum(v) for v in model(x, training=False).values())
        return sum(float(tf.norm(g)) for g in tape.gradient(loss, x))

    plain = input_grad_norm()
    with L.straight_through_clips(model):
        assert all(l.straight_through for l in L.noise_layers(model))
        straight = input_grad_norm()
    assert not any(l.straight_through for l in L.noise_layers(model))
    assert straight != pytest.approx(plain, rel=1e-3)


def test_robust_mail_keras_roundtrip_keeps_the_draw(tmp_path):
    model = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25, man=False)
    x = images(batch=2, seed=9)
    ref = model(x, training=False)
    model.save(tmp_path / "robust.keras")
    loaded = keras.saving.load_model(tmp_path / "robust.keras")
    out = loaded(x, training=False)
    for task in TASKS:
        np.testing.assert_allclose(out[task].numpy(), ref[task].numpy(), atol=1e-5)
    L.redraw_random_filters(loaded)
    assert not np.allclose(loaded(x, training=False)["cyto"].numpy(), ref["cyto"].numpy())


def test_builder_errors_name_the_setting():
    with pytest.raises(ValueError, match="rpf_ratio"):
        mail_tf.build_robust_mail(TASKS, (32, 32, 3), rpf_ratio=1.5)
    with pytest.raises(ValueError, match="man_sigma"):
        mail_tf.build_robust_mail(TASKS, (32, 32, 3), man_sigma=0.0)
    with pytest.raises(ValueError, match="need ERLA"):
        mail_tf.build_robust_mail(TASKS, (32, 32, 3), block="plain")
