"""Robust-MAIL: random projection filters, modulated attention noise, the builder's switches."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from mail_tf import layers as L
from mail_tf.layers import random_projection  # noqa: F401  (L.random_projection)
from mail_tf.layers.serialization import saved_before
from mail_tf.training.decay import apply_decoupled_decay, decayed_kernels, self_decayed
from conftest import TASKS, images


def _rpf_layers():
    return [L.RandomProjectionPointwiseConv2D(32, groups=16, rpf_ratio=0.25, seed=3),
            L.RandomProjectionDepthwiseConv2D(5, rpf_ratio=0.25, seed=3)]


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
        layer = L.RandomProjectionPointwiseConv2D(512, groups=16, rpf_ratio=0.5, seed=1)
    else:
        layer = L.RandomProjectionDepthwiseConv2D(kernel_size, rpf_ratio=0.5, seed=1)
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
    layer = L.RandomProjectionPointwiseConv2D(64, groups=16, rpf_ratio=0.25, seed=0)
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
    layer = L.RandomProjectionPointwiseConv2D(16, groups=16, rpf_ratio=0.25, seed=0)
    layer.build((None, 4, 4, 16))
    assert layer.kernel.shape[-1] == 12 and layer.random_kernel.shape[-1] == 4
    assert L.random_projection.random_positions(16, 4) == [2, 6, 10, 14]


def test_rpf_depthwise_equals_a_depthwise_conv_with_the_assembled_kernel():
    layer = L.RandomProjectionDepthwiseConv2D(3, strides=2, rpf_ratio=0.25, seed=0)
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
    # rho is decoupled decay applied by the training step, not an L2 term in the losses (Eq. 17).
    assert not model.losses
    rates = {v.path: rate for v, rate in self_decayed(model)}
    assert sorted(rates) == sorted(deltas + rpf)
    assert {rates[p] for p in rpf} == {1e-2} and {rates[p] for p in deltas} == {1e-4}


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
    noise = L.AttentionNoise(man_sigma=0.6, man_init=1.0, seed=0)
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


@pytest.mark.parametrize("index", [0, 1])
def test_trainable_rpf_kernels_are_standardised_to_the_random_std(index):
    layer = [L.RandomProjectionPointwiseConv2D(32, groups=2, rpf_ratio=0.25, seed=3),    # 16 weights a filter
             L.RandomProjectionDepthwiseConv2D(5, rpf_ratio=0.25, seed=3)][index]
    x = tf.random.stateless_uniform((2, 8, 8, 32), (7, 8))
    layer(x)
    k = getattr(layer, "kernel_size", 1)
    rng = np.random.default_rng(0)
    # Any scale and offset per filter: what is applied has std 1/k over each filter's own weights.
    raw = rng.normal(0.3, 1.0, layer.kernel.shape) * rng.uniform(0.2, 5.0, layer.kernel.shape[layer.filter_axis])[
        (...,) if index == 0 else (slice(None), None)]
    layer.kernel.assign(raw.astype(np.float32))
    applied = layer.trainable_kernel().numpy()
    axes = tuple(a for a in range(applied.ndim) if a != layer.filter_axis % applied.ndim)
    np.testing.assert_allclose(applied.std(axis=axes), 1 / k, rtol=1e-3)
    # Scale-invariant: rescaling the raw kernel leaves the output unchanged (up to the 1e-5 guard).
    y = layer(x).numpy()
    layer.kernel.assign(layer.kernel * 7.0)
    np.testing.assert_allclose(layer(x).numpy(), y, rtol=1e-3, atol=1e-4)
    layer.rpf_standardize = False                      # the earlier form applies the raw kernel
    np.testing.assert_array_equal(layer.trainable_kernel().numpy(), layer.kernel.numpy())


def test_a_single_weight_filter_is_scaled_by_its_magnitude():
    layer = L.RandomProjectionPointwiseConv2D(16, groups=16, rpf_ratio=0.25, seed=0)
    layer.build((None, 4, 4, 16))                  # one input per group: a filter is one weight
    applied = layer.trainable_kernel().numpy()
    assert np.all(np.isfinite(applied))
    np.testing.assert_allclose(np.abs(applied), 1.0, rtol=1e-3)


def test_robust_mail_standardises_by_default():
    model = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25, man=False)
    layers = L.random_projection.random_projection_layers(model)
    assert layers and all(l.rpf_standardize for l in layers)
    off = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25, man=False, rpf_standardize=False)
    assert not any(l.rpf_standardize for l in L.random_projection.random_projection_layers(off))


def test_standardised_rpf_layers_roundtrip_through_keras_and_savedmodel(tmp_path):
    inputs = keras.Input((8, 8, 16))
    y = L.RandomProjectionPointwiseConv2D(32, groups=2, rpf_ratio=0.25, seed=1)(inputs)
    y = L.RandomProjectionDepthwiseConv2D(3, rpf_ratio=0.25, seed=2)(y)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(y))
    for layer in L.random_projection.random_projection_layers(model):   # raw kernels far from the std 1/k
        layer.kernel.assign(layer.kernel * 9.0)
    x = tf.random.stateless_uniform((2, 8, 8, 16), (1, 1))
    ref = model(x).numpy()
    model.save(tmp_path / "ws.keras")
    loaded = keras.saving.load_model(tmp_path / "ws.keras")
    assert all(l.rpf_standardize for l in L.random_projection.random_projection_layers(loaded))
    np.testing.assert_allclose(loaded(x).numpy(), ref, atol=1e-5)
    model.export(tmp_path / "ws_savedmodel", verbose=False)
    saved = tf.saved_model.load(str(tmp_path / "ws_savedmodel"))
    np.testing.assert_allclose(saved.serve(x).numpy(), ref, atol=1e-5)
    raw = L.RandomProjectionPointwiseConv2D(32, groups=2, rpf_ratio=0.25, seed=1, rpf_standardize=False)
    raw.build(x.shape)
    raw.kernel.assign(model.layers[1].kernel)
    assert not np.allclose(raw(x).numpy(), model.layers[1](x).numpy(), atol=1e-3)   # standardising matters


def test_configs_saved_before_an_option_load_with_the_form_they_were_trained_with():
    # An ERLA config as saved before ca_pools, depthwise_init, zero_init_residual and rpf_standardize
    # existed, with the flat defense keys of then (before `Defense`).
    old = {k: v for k, v in L.ERLA(32, name="old").get_config().items()
           if k not in ("ca_pools", "depthwise_init", "zero_init_residual", "defense")}
    old.update(rpf_ratio=0.25, man_sigma=0.0, man_init=0.1, defense_decay=0.0, rpf_std_scale=1.0)
    with pytest.warns(FutureWarning, match="old setting names"):
        erla = L.ERLA.from_config(old)
    assert (erla.ca_pools, erla.depthwise_init, erla.zero_init_residual) == ("notebook", "keras", False)
    assert erla.defense == L.Defense(rpf_ratio=0.25, rpf_standardize=False)
    erla.build((None, 8, 8, 32))
    assert not any(l.rpf_standardize for l in L.random_projection.random_projection_layers(erla))
    with pytest.warns(FutureWarning):
        ca = L.ChannelAttention.from_config({"name": "ca", "reduction": 4, "man_sigma": 0.6, "defense_decay": 1e-2})
    assert ca.pools == "notebook" and ca.defense == L.Defense(man_sigma=0.6, man_decay=1e-2, rpf_standardize=False)
    fresh = L.ERLA.from_config(L.ERLA(32, name="new").get_config())     # today's configs keep today's form
    assert (fresh.ca_pools, fresh.zero_init_residual, fresh.defense) == ("paper", True, L.Defense())

    @saved_before(option="old")
    class Probe(keras.layers.Layer):
        def __init__(self, option="new", **kwargs):
            super().__init__(**kwargs)
            self.option = option
    assert Probe.from_config({"name": "p"}).option == "old" and Probe().option == "new"


def test_decoupled_decay_runs_after_every_train_step_and_only_on_what_asks_for_it():
    class Held(keras.layers.Layer):               # a weight with zero gradient, decayed at rate 0.5
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(3,), initializer="ones")

        def decayed_weights(self):
            return [(self.w, 0.5)]

        def call(self, x):
            return x + 0.0 * tf.reduce_sum(self.w)

    inputs = keras.Input((4,))
    held = Held()
    model = keras.Model([inputs], {"t": keras.layers.Dense(2)(held(inputs))})
    optimizer = keras.optimizers.Adam(learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    step = mail_tf.training.make_train_step(model, optimizer)
    x, y = [np.ones((2, 4), np.float32)], {"t": np.array([0, 1])}
    for n in (1, 2):
        step(x, y)
        np.testing.assert_allclose(held.w.numpy(), (1 - 0.1 * 0.5) ** n, rtol=1e-6)   # Adam moved nothing
    v = tf.Variable([2.0, -4.0])
    apply_decoupled_decay([(v, 0.25)], 0.2)
    np.testing.assert_allclose(v.numpy(), [1.9, -3.8])


def test_weight_decay_chooses_kernels_by_rank_never_scales():
    from mail_tf.training.config import TrainConfig
    from mail_tf.training.trainer import make_optimizer

    model = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25)
    kernels = decayed_kernels(model)
    ids = {id(v) for v in kernels}
    assert kernels and all(len(v.shape) >= 2 for v in kernels)
    assert not any(v.path.split("/")[-1] in ("theta", "theta_m") for v in kernels)      # per-modality tables
    assert not ids & {id(v) for v, _ in self_decayed(model)}                             # rho / MAN's own
    left = [v for v in model.trainable_variables if id(v) not in ids and len(v.shape) >= 2]
    assert sorted({v.path.split("/")[-1] for v in left}) == ["kernel", "theta", "theta_m"]
    assert len(left) == 4 + 4 + 36 * 3        # EMSCA's and EMCAM's tables; ERLA's and EMSCA's RPF kernels
    config = TrainConfig(optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    optimizer = make_optimizer(config, model)
    optimizer.build(model.trainable_variables)
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v, old in zip(model.trainable_variables, before):
        expected = old * (1 - 0.1 * 0.5) if id(v) in ids else old
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=v.path)


def test_delta_statistics_say_whether_the_noise_is_alive():
    from mail_tf.training.trainer import noise_weights

    model = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25, man_init=0.1)
    layers = L.noise_layers(model)
    layers[0].delta.assign(tf.zeros_like(layers[0].delta))
    stats = noise_weights(model)["man_delta"]
    assert stats["min"] == 0.0 and stats["max"] == pytest.approx(0.1) and 0 < stats["mean"] < 0.1
    assert noise_weights(mail_tf.build_model("mail_rn18", TASKS, (32, 32, 3), width=0.25)) == {}


@pytest.mark.parametrize("make, old_names", [
    (lambda: L.RandomProjectionPointwiseConv2D(32, groups=2, rpf_ratio=0.5, defense_decay=0.01, rpf_std_scale=2.0,
                                               seed=4), L.random_projection.OLD_NAMES),
    (lambda: L.RandomProjectionDepthwiseConv2D(3, rpf_ratio=0.5, defense_decay=0.01, rpf_std_scale=2.0,
                                               rpf_standardize=False, seed=4), L.random_projection.OLD_NAMES),
    (lambda: L.AttentionNoise(man_sigma=0.3, man_init=0.5, man_decay=1e-4, seed=4),
     {"sigma": "man_sigma", "initial_weight": "man_init", "weight_decay": "man_decay"}),
])
def test_leaf_layers_saved_with_the_old_setting_names_load_as_the_same_layer(make, old_names):
    config = make().get_config()
    new_names = {new: old for old, new in old_names.items()}
    old = {new_names.get(k, k): v for k, v in config.items()}
    assert set(old) != set(config)
    with pytest.warns(FutureWarning, match="old setting names"):
        loaded = type(make()).from_config(old)
    assert loaded.get_config() == config


def test_one_defense_object_reaches_every_block_and_leaf():
    model = mail_tf.build_model("robust_mail", TASKS, (32, 32, 3), width=0.25, rpf_ratio=0.5, rpf_std_scale=0.5,
                                defense_decay=0.02, man_sigma=0.3, man_init=0.2, man_decay=1e-3, rpf_emcam=False)
    blocks = [l for l in model.layers if isinstance(l, L.ERLA)]
    emcams = [l for l in model.layers if isinstance(l, L.EMCAM)]
    block_defense = L.Defense(rpf_ratio=0.5, rpf_std_scale=0.5, defense_decay=0.02, man_sigma=0.3, man_init=0.2,
                              man_decay=1e-3)
    assert blocks and all(b.defense == block_defense for b in blocks)
    assert emcams and all(e.defense == block_defense.replace(rpf_ratio=0.0) for e in emcams)
    rpf = L.random_projection_layers(model)
    assert rpf and all((l.rpf_ratio, l.rpf_std_scale, l.defense_decay) == (0.5, 0.5, 0.02) for l in rpf)
    noise = L.noise_layers(model)
    assert noise and all((n.man_sigma, n.man_init, n.man_decay) == (0.3, 0.2, 1e-3) for n in noise)
    for bad, match in ((dict(rpf_ratio=1.5), "rpf_ratio"), (dict(man_decay=-1), "man_decay"),
                       (dict(rpf_std_scale=0), "rpf_std_scale")):
        with pytest.raises(ValueError, match=match):
            L.Defense(**bad)
