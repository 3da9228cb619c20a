"""A frozen model (weights as graph constants) computes what the model computes, on the weights it
was frozen with, and keeps what changes at inference live."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from mail_tf.inference import FrozenModel, freeze
from mail_tf.layers.random_projection import redraw_random_filters
from mail_tf.training import make_predict_fn
from conftest import TASKS, images, tiny_mail


def _logits_and_input_grads(forward, xs):
    xs = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        logits = forward(xs, training=False)
        loss = sum(tf.reduce_sum(v * tf.sin(v)) for v in logits.values())
    return {k: v.numpy() for k, v in logits.items()}, [g.numpy() for g in tape.gradient(loss, xs)]


@pytest.mark.parametrize("name", ["mail_rn18", "resnet18_pair"])
def test_frozen_logits_and_input_gradients_equal_the_models(name):
    keras.utils.set_random_seed(3)
    model = mail_tf.build_model(name, TASKS, input_shape=(32, 32, 3), width=0.25)
    xs = images(batch=4)
    want = _logits_and_input_grads(model, xs)
    frozen = freeze(model)
    for forward in (frozen, tf.function(lambda x, training=False: frozen(x, training=training))):
        got = _logits_and_input_grads(forward, xs)
        for task in want[0]:
            np.testing.assert_allclose(got[0][task], want[0][task], rtol=1e-5, atol=1e-5)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_a_frozen_model_keeps_the_weights_it_was_frozen_with():
    model = tiny_mail()
    xs = images()
    logits = lambda forward: np.concatenate([v.numpy() for v in forward(xs).values()], axis=1)
    before = logits(lambda x: model(x, training=False))
    predict = make_predict_fn(model, freeze=True)
    np.testing.assert_allclose(logits(predict), before, rtol=1e-5, atol=1e-5)
    for v in model.trainable_variables:
        v.assign(v * 1.1 + 0.01)
    after = logits(lambda x: model(x, training=False))
    assert np.abs(after - before).max() > 1e-3                               # the weights did change
    np.testing.assert_allclose(logits(predict), before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits(freeze(model)), after, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="inference only"):
        freeze(model)(xs, training=True)


def test_randomness_at_inference_stays_live():
    """Robust-MAIL's attention noise draws anew at every frozen call, and a redraw of the random
    filters on the model changes what the frozen model computes."""
    keras.utils.set_random_seed(5)
    model = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25)
    frozen = freeze(model)
    step = tf.function(lambda x: frozen(x))
    xs = images(batch=4)
    first, second = step(xs)["cyto"].numpy(), step(xs)["cyto"].numpy()
    assert np.abs(first - second).max() > 1e-6
    # without the noise, calls repeat until the random filters are redrawn
    quiet = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25, man=False)
    frozen = freeze(quiet)
    step = tf.function(lambda x: frozen(x))
    a, b = step(xs)["cyto"].numpy(), step(xs)["cyto"].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, quiet(xs, training=False)["cyto"].numpy(), rtol=1e-5, atol=1e-5)
    redraw_random_filters(quiet)
    c = step(xs)["cyto"].numpy()
    assert np.abs(c - a).max() > 1e-6
    np.testing.assert_allclose(c, quiet(xs, training=False)["cyto"].numpy(), rtol=1e-5, atol=1e-5)


def test_the_evaluator_freezes_only_deterministic_models():
    from mail_tf.attacks.evaluate import AttackSpec, Evaluator

    spec = AttackSpec("pgd", 4 / 255, None, 2)
    assert isinstance(Evaluator(tiny_mail(), spec).forward, FrozenModel)
    robust = mail_tf.build_robust_mail(TASKS, (32, 32, 3), width=0.25)
    assert Evaluator(robust, spec).forward is robust
