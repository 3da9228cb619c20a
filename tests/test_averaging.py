"""The weight average (--ema_decay): its arithmetic, what it covers, and swapping it in and out."""

import keras
import numpy as np
import pytest

from mail_tf.layers.random_projection import RandomProjectionPointwiseConv2D
from mail_tf.training.averaging import WeightAverage, averaged_variables


def _model():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(x)
    h = keras.layers.BatchNormalization()(h)
    h = RandomProjectionPointwiseConv2D(4, rpf_ratio=0.5, seed=1)(h)
    return keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))


def test_average_covers_trainable_weights_and_bn_statistics_only():
    model = _model()
    covered = {v.path for v in averaged_variables(model)}
    assert {v.path for v in model.trainable_variables} <= covered
    assert any("moving_mean" in p for p in covered) and any("moving_variance" in p for p in covered)
    random = [v.path for v in model.non_trainable_variables if "moving" not in v.path]
    assert random and not covered & set(random)       # random projection kernels, seed states


def test_update_follows_the_warmed_up_decay_and_swap_restores_both():
    keras.utils.set_random_seed(0)
    model = _model()
    average = WeightAverage(model, 0.2)
    start = [v.numpy() for v in average.targets]
    expected = [s.copy() for s in start]
    for step, shift in enumerate((1.0, -2.0, 0.5, 3.0)):
        for v in average.targets:
            v.assign(v.numpy() + shift)
        average.update(step)
        decay = min(0.2, (1 + step) / (10 + step))       # 0.1, 0.18, then the cap 0.2
        current = [v.numpy() for v in average.targets]
        expected = [decay * e + (1 - decay) * c for e, c in zip(expected, current)]
        for shadow, e in zip(average.variables, expected):
            np.testing.assert_allclose(shadow.numpy(), e, rtol=1e-5, atol=1e-6)
    live = [v.numpy() for v in average.targets]
    with average.applied():
        for v, e in zip(average.targets, expected):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    for v, before in zip(average.targets, live):
        np.testing.assert_array_equal(v.numpy(), before)
    for shadow, e in zip(average.variables, expected):
        np.testing.assert_allclose(shadow.numpy(), e, rtol=1e-5, atol=1e-6)


def test_a_decay_outside_the_unit_interval_is_named():
    with pytest.raises(ValueError, match=r"ema_decay=1\.0: expected a number in \(0, 1\)"):
        WeightAverage(_model(), 1.0)


def test_checkpoint_carries_the_average(tmp_path):
    from mail_tf.training import checkpoint

    model = _model()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    average = WeightAverage(model, 0.99)
    for shadow in average.variables:
        shadow.assign(shadow.numpy() + 0.25)
    saved = [s.numpy() for s in average.variables]
    checkpoint.save(tmp_path / "a.npz", model, optimizer, {"epoch": 3}, average)
    for shadow in average.variables:
        shadow.assign(shadow.numpy() * 0)
    assert checkpoint.load(tmp_path / "a.npz", model, optimizer, average) == {"epoch": 3}
    for shadow, value in zip(average.variables, saved):
        np.testing.assert_array_equal(shadow.numpy(), value)
    # A run without the average cannot be resumed as one with it (and says so).
    checkpoint.save(tmp_path / "b.npz", model, optimizer, {"epoch": 3})
    with pytest.raises(ValueError, match="holds no average variables"):
        checkpoint.load(tmp_path / "b.npz", model, optimizer, average)
