"""DRIFA-Net: parameter counts pinned to DRIFA_NET_SPEC §5, module maths, MC dropout, serialisation."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from mail_tf.layers import MFA, MIFA, RRA
from mail_tf.layers.walk import sublayers


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _dense(layer, x):
    kernel, bias = (w.numpy() for w in layer.weights)
    return _sigmoid(x @ kernel + bias)


def test_parameter_counts_match_the_spec():
    model = mail_tf.build_model("drifa_net", {"sipakmed": 5, "ham10000": 7}, (128, 128, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (model.count_params(), trainable) == (53_884_868, 53_865_668)
    counts = collections.Counter(type(layer).__name__ for layer in sublayers(model))
    assert (counts["MFA"], counts["MIFA"], counts["BatchNormalization"], counts["Dropout"]) == (48, 8, 40, 13)
    pair_b = mail_tf.build_model("drifa_net", {"mri": 4, "ct": 3}, (128, 128, 3))
    assert pair_b.count_params() == 53_879_743


@pytest.mark.parametrize("u, mfa, mifa", [(64, 33_345, 12_673), (128, 132_225, 49_921)])
def test_per_module_parameter_counts(u, mfa, mifa):
    layer = MFA()
    layer.build((None, 4, 4, u))
    assert layer.count_params() == mfa == 8 * u * u + 9 * u + 1
    fusion = MIFA(2)
    fusion.build([(None, 4, 4, u)] * 2)
    assert fusion.count_params() == mifa == 3 * u * u + 6 * u + 1


def test_mfa_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 5, 8)).astype("float32")
    layer = MFA()
    layer.build(x.shape)
    for w in (layer.gamma, layer.lam, layer.alpha):          # away from the all-ones start
        w.assign(rng.normal(size=w.shape).astype("float32"))
    a, b, c, d, e, f = layer.convs
    g1 = _dense(a, x)
    g2 = _dense(b, g1)
    g3 = _dense(c, g1 + g2)
    g4 = _dense(d, g3)
    s = np.concatenate([g1.mean((1, 2)) + g2.max((1, 2)), g3.mean((1, 2)) + g4.max((1, 2))], -1)
    a_h = _dense(layer.fuse, s)
    l1 = _dense(e, x).mean((1, 2))
    a_c = l1 + _dense(f, l1)
    attention = _sigmoid(layer.gamma.numpy() * a_h + layer.lam.numpy() * a_c)
    expected = x * (attention * layer.alpha.numpy())[:, None, None, :]
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mifa_applies_one_attention_to_every_modality():
    rng = np.random.default_rng(1)
    xs = [np.abs(rng.normal(size=(2, 4, 4, 8))).astype("float32") for _ in range(3)]
    layer = MIFA(3)
    ys = [y.numpy() for y in layer(xs)]
    pooled = [sum(fn(x, axis=(1, 2)) for x in xs) for fn in (np.min, np.mean, np.max)]
    a_g = sum(_dense(layer.dense, p) for p in pooled)
    a_l = 0
    for conv, x in zip(layer.convs, xs):
        m = _dense(conv, x)
        a_l = a_l + m.min((1, 2)) + m.mean((1, 2)) + m.max((1, 2))
    attention = _sigmoid(a_g + a_l)                         # gamma, lambda, alpha start at one
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, x * attention[:, None, None, :], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="same \\(height, width, channels\\)"):
        MIFA(2)([xs[0], xs[1][:, :2]])


def test_rra_shapes_and_shortcut_check():
    block = RRA(16, strides=2, projection=True)
    assert block(tf.zeros((1, 8, 8, 8))).shape == (1, 4, 4, 16)
    # One shortcut policy for every residual block (the specs'): identity unless strided or asked.
    from mail_tf.layers import ERLA, ResidualBlock

    for block in (RRA, ERLA, ResidualBlock):
        with pytest.raises(ValueError, match="identity shortcut needs 16 input channels"):
            block(16)(tf.zeros((1, 8, 8, 8)))


def _small(mc_dropout=False):
    keras.utils.set_random_seed(0)
    return mail_tf.build_model("drifa_net", {"a": 3, "b": 2}, (32, 32, 3), width=0.25, mc_dropout=mc_dropout)


def test_mc_dropout_passes_differ_only_when_asked():
    x = [np.random.default_rng(2).random((4, 32, 32, 3), dtype=np.float32) for _ in range(2)]
    plain, mc = _small(), _small(mc_dropout=True)
    assert np.array_equal(plain.predict(x, verbose=0)["a"], plain.predict(x, verbose=0)["a"])
    first, second = mc.predict(x, verbose=0)["a"], mc.predict(x, verbose=0)["a"]
    assert not np.allclose(first, second)                  # still stochastic inside predict()


def test_keras_file_roundtrip(tmp_path):
    model = _small()
    x = [np.random.default_rng(3).random((2, 32, 32, 3), dtype=np.float32) for _ in range(2)]
    model.save(tmp_path / "drifa.keras")
    loaded = keras.saving.load_model(tmp_path / "drifa.keras")
    for task in ("a", "b"):
        np.testing.assert_allclose(loaded(x)[task].numpy(), model(x)[task].numpy(), rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.get_layer("block1_mifa"), MIFA)
