"""Layer behaviour: shapes, equations, configs and clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mail_tf import layers as L


def _clone_output(layer, inputs):
    """Output of a layer rebuilt from its config with the same weights."""
    clone = layer.__class__.from_config(layer.get_config())
    clone(inputs)
    clone.set_weights(layer.get_weights())
    return clone(inputs)


@pytest.mark.parametrize("make,shape", [
    (lambda: L.MSGDC(32, strides=2), (2, 8, 8, 16)),
    (lambda: L.ChannelAttention(), (2, 8, 8, 32)),
    (lambda: L.ChannelShuffle(16), (2, 4, 4, 32)),
    (lambda: L.GroupedPointwiseConv2D(32, groups=16, strides=2), (2, 8, 8, 16)),
    (lambda: L.EMILA(32, strides=2), (2, 8, 8, 16)),
    (lambda: L.ERLA(32, strides=2, projection=True), (2, 8, 8, 16)),
    (lambda: L.ERLA(16), (2, 8, 8, 16)),
    (lambda: L.ResidualBlock(32, strides=2), (2, 8, 8, 16)),
])
def test_single_input_layers_shape_and_config_roundtrip(make, shape):
    layer = make()
    x = tf.random.stateless_uniform(shape, seed=(0, 1))
    y = layer(x)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(shape))
    np.testing.assert_allclose(_clone_output(layer, x).numpy(), y.numpy(), atol=1e-6)
    assert keras.saving.get_registered_name(type(layer)).startswith("mail_tf>")


@pytest.mark.parametrize("make", [lambda: L.MFIFA(2), lambda: L.EMSCA(2), lambda: L.EMCAM(2),
                                  lambda: L.EMCAM(3, fusion="cascaded"), lambda: L.EMCAM(3, fusion="mfifa"),
                                  lambda: L.EMCAM(2, fusion="emsca")])
def test_multimodal_layers_config_roundtrip(make):
    layer = make()
    m = layer.modalities
    xs = [tf.random.stateless_uniform((2, 4, 4, 32), seed=(i, 9)) for i in range(m)]
    ys = layer(xs)
    again = _clone_output(layer, xs)
    for a, b in zip(tf.nest.flatten(ys), tf.nest.flatten(again)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_msgdc_concatenates_gpc_and_depthwise_branches():
    layer = L.MSGDC(32, strides=1)
    y = layer(tf.zeros((1, 6, 6, 16)))
    assert y.shape == (1, 6, 6, 32 + 2 * 16)


@pytest.mark.parametrize("pools", ["paper", "notebook"])
def test_channel_attention_matches_the_equation(pools):
    layer = L.ChannelAttention(reduction=4, pools=pools)
    y = np.random.default_rng(0).normal(size=(2, 5, 5, 16)).astype(np.float32)
    layer(y)
    layer.theta.assign(0.7)
    out = layer(y).numpy()
    w1, b1, w2, b2, theta = [v.numpy() for v in (layer.squeeze.kernel, layer.squeeze.bias,
                                                 layer.excite.kernel, layer.excite.bias, layer.theta)]
    gmn, gap, gmp = y.min((1, 2)), y.mean((1, 2)), y.max((1, 2))
    gsp = y.sum((1, 2)) if pools == "notebook" else 0   # the notebook's fourth pool; Eq. 4 has three
    z = (gmn + gap + gmp + gsp) + (gmp - gap - gmn)
    a = 1 / (1 + np.exp(-(np.maximum(z @ w1 + b1, 0) @ w2 + b2) * theta))
    np.testing.assert_allclose(out, y * a[:, None, None, :], rtol=1e-4, atol=1e-5)


def test_attention_init_neutral_starts_every_gate_at_one_half_and_emcam_as_identity():
    y = np.random.default_rng(0).normal(size=(2, 5, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(L.ChannelAttention(attention_init="neutral")(y).numpy(), 0.5 * y, rtol=1e-6)
    assert float(L.ChannelAttention()(y).numpy().std()) != pytest.approx(0.5 * y.std())
    xs = [tf.random.stateless_normal((2, 4, 4, 16), seed=(i, 5)) for i in range(2)]
    for cls in (L.MFIFA, L.EMSCA):
        np.testing.assert_array_equal(cls(2, attention_init="neutral")(xs).numpy(), 0.5)
        assert np.std(cls(2)(xs).numpy()) > 0.01
    for fusion in L.FUSIONS:
        for x, out in zip(xs, L.EMCAM(2, fusion=fusion, attention_init="neutral")(xs)):
            np.testing.assert_allclose(out.numpy(), x.numpy(), rtol=1e-6, atol=1e-6, err_msg=fusion)
        paper = L.EMCAM(2, fusion=fusion)(xs)
        assert not np.allclose(paper[0].numpy(), xs[0].numpy()), fusion
    with pytest.raises(ValueError, match="attention_init must be one of"):
        L.EMCAM(2, attention_init="zero")
    with pytest.raises(ValueError, match="pools must be one of"):
        L.ChannelAttention(pools="sum")


def test_depthwise_kernels_start_with_std_one_over_k():
    """Keras's glorot counts C_in into a depth-wise filter's fan-in; "fan_in" uses k*k."""
    for cls in (lambda **kw: L.MSGDC(64, **kw), lambda **kw: L.MSGDC(64, defense=L.Defense(rpf_ratio=0.25), **kw)):
        layer = cls()
        layer.build((None, 8, 8, 128))
        for dw, k in zip(layer.depthwise, (3, 5)):
            kernel = dw.kernel.numpy()
            assert abs(kernel.std() * k - 1) < 0.1, (k, kernel.std())
        keras_form = cls(depthwise_init="keras")
        keras_form.build((None, 8, 8, 128))
        assert keras_form.depthwise[0].get_weights()[0].std() * 3 < 0.2
    with pytest.raises(ValueError, match="depthwise_init must be one of"):
        L.MSGDC(64, depthwise_init="he")


def test_mfifa_matches_the_equations():
    layer = L.MFIFA(2)
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(2, 3, 3, 8)).astype(np.float32) for _ in range(2)]
    out = layer(xs).numpy()
    layer.alpha.assign([0.5, 2.0])
    layer.phi.assign([1.5, -1.0])
    layer.gamma.assign([0.3, 0.7])
    out = layer(xs).numpy()
    w, b = layer.descriptor.kernel.numpy(), layer.descriptor.bias.numpy()
    f = lambda p: (1 / (1 + np.exp(-(p @ w + b))))[:, None, None, :]  # noqa: E731
    total = 0
    for i, x in enumerate(xs):
        d = x @ L.dct_matrix(8).T
        f_min, f_avg, f_max = f(d.min((1, 2))), f(d.mean((1, 2))), f(d.max((1, 2)))
        low = f_min + f_avg
        high = (d - f_min) + (d - f_avg) + f_max
        total += [0.5, 2.0][i] * low + [1.5, -1.0][i] * high + [0.3, 0.7][i] * (high - low)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-total)), rtol=1e-4, atol=1e-5)


def test_emsca_is_symmetric_across_modalities():
    """With equal theta_i the symmetric pairing S(x_i) + S(x_{m-i+1}) makes A_s order-free."""
    layer = L.EMSCA(2, attention_init="paper")
    xs = [tf.random.stateless_normal((2, 6, 6, 16), seed=(i, 3)) for i in range(2)]
    a = layer(xs)
    assert a.shape == (2, 1, 1, 16)
    np.testing.assert_allclose(a.numpy(), layer(xs[::-1]).numpy(), atol=1e-6)


def test_emcam_recalibrates_every_modality_with_one_map():
    layer = L.EMCAM(2, attention_init="paper")
    xs = [tf.random.stateless_uniform((2, 4, 4, 16), seed=(i, 5), minval=0.5, maxval=1.0) for i in range(2)]
    ys = layer(xs)
    ratios = [(y / x).numpy() for x, y in zip(xs, ys)]
    np.testing.assert_allclose(ratios[0], ratios[1], rtol=1e-5)  # same A_m, theta_m initialised to 1
    assert np.all((ratios[0] > 0) & (ratios[0] < 1))


def test_emcam_fusion_modes_differ_and_own_only_their_weights():
    xs = [tf.random.stateless_normal((1, 4, 4, 16), seed=(i, 7)) for i in range(2)]
    counts, outs = {}, {}
    for fusion in L.FUSIONS:
        keras.utils.set_random_seed(0)
        layer = L.EMCAM(2, fusion=fusion, attention_init="paper")
        outs[fusion] = layer(xs)[0].numpy()
        counts[fusion] = layer.count_params()
    assert counts["parallel"] == counts["cascaded"] > counts["mfifa"] and counts["parallel"] > counts["emsca"]
    assert not np.allclose(outs["parallel"], outs["cascaded"])


def test_emcam_errors_name_the_problem():
    with pytest.raises(ValueError, match="same \\(height, width, channels\\)"):
        L.EMCAM(2)([tf.zeros((1, 4, 4, 16)), tf.zeros((1, 8, 8, 16))])
    with pytest.raises(ValueError, match="built for 3 modalities, got 2"):
        L.EMCAM(3)([tf.zeros((1, 4, 4, 16))] * 2)
    with pytest.raises(ValueError, match="fusion must be one of"):
        L.EMCAM(2, fusion="serial")


def test_mc_dropout_stays_on_in_predict_while_dropout_does_not():
    for cls, stochastic in ((L.MCDropout, True), (keras.layers.Dropout, False)):
        inp = keras.Input((64,))
        model = keras.Model(inp, cls(0.5)(inp))
        x = np.ones((4, 64), np.float32)
        a, b = model.predict(x, verbose=0), model.predict(x, verbose=0)
        assert (not np.array_equal(a, b)) == stochastic
