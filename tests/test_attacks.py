"""Sign-gradient attacks on multi-input models, and Algorithm 2's adversarial train step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from mail_tf import layers as L
from mail_tf.attacks import SignAttack, sign_attack, tmtl_objective
from mail_tf.training.step import make_train_step
from conftest import images

EPS = 4 / 255


def _linear_loss(weights):
    """loss(x) = sum_i <w_i, x_i>: the l-inf optimum in the ball is x + eps * sign(w) (ROBUSTNESS_EVAL §4)."""
    return lambda xs: sum(tf.reduce_sum(w * x) for w, x in zip(weights, xs))


@pytest.mark.parametrize("method", ["fgsm", "bim", "pgd", "mim"])
def test_every_method_reaches_the_linear_optimum(method):
    rng = np.random.default_rng(0)
    x = [rng.uniform(0.1, 0.9, (3, 6, 6, 3)).astype(np.float32) for _ in range(2)]
    w = [rng.normal(size=(3, 6, 6, 3)).astype(np.float32) for _ in range(2)]
    adv = sign_attack(_linear_loss(w), x, SignAttack(method, eps=EPS, iters=10), seed=(1, 2))
    for xi, wi, ai in zip(x, w, adv):
        np.testing.assert_allclose(ai.numpy(), xi + EPS * np.sign(wi), atol=1e-6)


def test_the_optimum_is_clipped_to_the_unit_interval():
    x = [np.array([[0.0, 0.5, 1.0]], np.float32)]
    w = [np.array([[-1.0, 1.0, 1.0]], np.float32)]
    adv = sign_attack(_linear_loss(w), x, SignAttack("pgd", eps=0.1, iters=20), seed=(0, 0))
    np.testing.assert_allclose(adv[0].numpy(), [[0.0, 0.6, 1.0]], atol=1e-6)


def test_adversarial_images_stay_in_the_ball_and_the_loss_increases(small_mail):
    x = images(batch=4, seed=3)
    labels = {"cyto": tf.constant([0, 1, 2, 3]), "derm": tf.constant([6, 5, 4, 3])}
    objective = tmtl_objective(small_mail, labels)
    for method in ("fgsm", "pgd", "mim"):
        adv = sign_attack(objective, x, SignAttack(method, eps=EPS, iters=5), seed=(4, 5))
        for xi, ai in zip(x, adv):
            a = ai.numpy()
            assert a.min() >= 0 and a.max() <= 1
            assert np.abs(a - xi).max() <= EPS + 1e-6
            assert np.abs(a - xi).max() > EPS / 2          # it did move
        clean_loss = float(tf.reduce_mean(objective([tf.constant(v) for v in x])))
        assert float(tf.reduce_mean(objective(adv))) > clean_loss, method


def test_one_modality_can_be_attacked_alone():
    rng = np.random.default_rng(1)
    x = [rng.uniform(0.2, 0.8, (2, 4, 4, 3)).astype(np.float32) for _ in range(2)]
    w = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(2)]
    adv = sign_attack(_linear_loss(w), x, SignAttack("pgd", eps=EPS), seed=(0, 1), perturb=[1])
    np.testing.assert_array_equal(adv[0].numpy(), x[0])
    np.testing.assert_allclose(adv[1].numpy(), x[1] + EPS * np.sign(w[1]), atol=1e-6)


def test_compiled_attack_equals_the_eager_one():
    rng = np.random.default_rng(2)
    x = [rng.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)]
    w = [tf.constant(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))]
    loss = lambda xs: tf.reduce_sum(tf.sin(3.0 * xs[0]) * w[0])       # non-linear: the path matters
    attack = SignAttack("pgd", eps=0.1, iters=7)
    eager = sign_attack(loss, x, attack, seed=(3, 4))
    compiled = tf.function(lambda xs: sign_attack(loss, xs, attack, seed=(3, 4)))(x)
    np.testing.assert_allclose(compiled[0].numpy(), eager[0].numpy(), atol=1e-6)


def test_attack_settings_are_checked():
    with pytest.raises(ValueError, match="method"):
        SignAttack("cw")
    with pytest.raises(ValueError, match="iters"):
        SignAttack("pgd", iters=0)
    assert SignAttack("pgd").step_size == pytest.approx(1 / 255)
    assert SignAttack("fgsm").step_size == SignAttack("fgsm").eps and SignAttack("fgsm").steps == 1


def _tiny_rpf_model(seed=0):
    """Two 8x8 inputs, one RPF 1x1 conv each, two heads: every mechanism of Algorithm 2, fast to trace."""
    keras.utils.set_random_seed(seed)
    inputs = [keras.Input((8, 8, 3), name=f"{t}_image") for t in ("a", "b")]
    outputs = {}
    for t, x in zip(("a", "b"), inputs):
        y = L.RandomProjectionPointwiseConv2D(8, rpf_ratio=0.5, seed=11 if t == "a" else 12, name=f"{t}_rpf")(x)
        y = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(y))
        outputs[t] = keras.layers.Dense(3, name=t)(y)
    return keras.Model(inputs, outputs)


def _batch():
    rng = np.random.default_rng(8)
    x = tuple(tf.constant(rng.uniform(0, 1, (6, 8, 8, 3)).astype(np.float32)) for _ in range(2))
    y = {"a": tf.constant([0, 1, 2, 0, 1, 2]), "b": tf.constant([2, 2, 1, 1, 0, 0])}
    return x, y


def _twin_draws(model, n):
    """The random kernels after `n` more draws from the model's current seed states."""
    out = []
    for layer in L.random_projection_layers(model):
        gen = keras.random.SeedGenerator(0)
        gen.state.assign(layer.seed_generator.state)
        for _ in range(n):
            value = keras.random.normal(layer.random_kernel.shape, stddev=1.0, seed=gen)
        out.append(value.numpy())
    return out


@pytest.mark.parametrize("adversarial", [False, True])
def test_train_step_draws_once_per_batch_clean_and_twice_adversarial(adversarial):
    model = _tiny_rpf_model()
    optimizer = keras.optimizers.SGD(0.1)
    expected = _twin_draws(model, 2 if adversarial else 1)
    step = make_train_step(model, optimizer, adversarial=SignAttack("pgd", iters=2) if adversarial else None)
    step(*_batch())
    for layer, value in zip(L.random_projection_layers(model), expected):
        np.testing.assert_allclose(layer.random_kernel.numpy(), value, atol=1e-6)


def test_adversarial_step_updates_on_the_attack_crafted_with_the_attack_phase_draw():
    x, y = _batch()
    attack = SignAttack("pgd", eps=8 / 255, iters=3)
    # By hand: draw [A], craft X* (seed (0, step 0)), draw [I], one SGD step on L(X*).
    ref = _tiny_rpf_model()
    L.redraw_random_filters(ref)
    adv = sign_attack(tmtl_objective(ref, y), list(x), attack, seed=(0, 0))
    L.redraw_random_filters(ref)
    with tf.GradientTape() as tape:
        loss = mail_tf.training.losses.tmtl_loss(y, ref(adv, training=True))
    grads = tape.gradient(loss, ref.trainable_variables)
    for v, g in zip(ref.trainable_variables, grads):
        v.assign_sub(0.1 * g)

    model = _tiny_rpf_model()
    step = make_train_step(model, keras.optimizers.SGD(0.1), adversarial=attack, seed=0)
    assert float(step(x, y)) == pytest.approx(float(loss), rel=1e-5)
    for a, b in zip(model.weights, ref.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def _tiny_dataset(task_count=2):
    x, y = _batch()
    return {t: tf.data.Dataset.from_tensor_slices((x, y)).batch(4) for t in ("a", "b")}


def test_both_protocols_agree_on_a_deterministic_model():
    from mail_tf.attacks.evaluate import is_randomized, robust_accuracy

    keras.utils.set_random_seed(0)
    inputs = [keras.Input((8, 8, 3), name=f"{t}_image") for t in ("a", "b")]
    pooled = [keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x)) for x in inputs]
    model = keras.Model(inputs, {t: keras.layers.Dense(3, name=t)(p) for t, p in zip(("a", "b"), pooled)})
    assert not is_randomized(model)
    attack = SignAttack("pgd", eps=0.1, iters=3)
    paper = robust_accuracy(model, _tiny_dataset(), attack, "paper", seed=3)
    adaptive = robust_accuracy(model, _tiny_dataset(), attack, "adaptive", eot=4, draws=3, seed=3)
    for t in ("a", "b"):
        assert paper[t]["count"] == 6
        for key in ("clean_accuracy", "robust_accuracy"):
            assert paper[t][key] == adaptive[t][key]
        assert paper[t]["robust_accuracy"] <= paper[t]["clean_accuracy"]
        assert "robust_majority_accuracy" not in adaptive[t]


def test_task_loss_breaks_a_task_the_tmtl_objective_spares():
    """Head b's loss (10x steeper) rises when the mean pixel rises, head a's when it falls: the TMTL sign
    gradient follows b and helps a; the scored task's own loss breaks a."""
    from mail_tf.attacks.evaluate import AttackSpec, robust_accuracy

    inputs = [keras.Input((8, 8, 3), name=f"{t}_image") for t in ("a", "b")]
    unused = keras.layers.Dense(3, use_bias=False, kernel_initializer="zeros")(
        keras.layers.GlobalAveragePooling2D()(inputs[1]))
    f = keras.layers.Add()([keras.layers.GlobalAveragePooling2D()(inputs[0]), unused])
    heads = {}
    for t, slope, bias in (("a", 10.0, 1.0 - 15.0), ("b", 100.0, -151.0)):
        # logit_0 = slope * sum(channel means) + bias, logit_1 = 0; at mean pixel 0.5 the margin is 1.
        kernel = np.zeros((3, 2), np.float32)
        kernel[:, 0] = slope
        heads[t] = keras.layers.Dense(2, name=t, kernel_initializer=keras.initializers.Constant(kernel),
                                      bias_initializer=keras.initializers.Constant([bias, 0.0]))(f)
    model = keras.Model(inputs, heads)
    x = tuple(np.full((4, 8, 8, 3), 0.5, np.float32) for _ in range(2))
    y = {"a": np.zeros(4, np.int64), "b": np.ones(4, np.int64)}
    data = {t: tf.data.Dataset.from_tensor_slices((x, y)).batch(4) for t in ("a", "b")}
    clean = {t: np.argmax(model(list(x))[t].numpy(), -1) for t in ("a", "b")}
    assert (clean["a"] == 0).all() and (clean["b"] == 1).all()
    tmtl = robust_accuracy(model, data, AttackSpec("pgd", eps=0.1, iters=10, loss="tmtl"), seed=1)
    task = robust_accuracy(model, data, AttackSpec("pgd", eps=0.1, iters=10), seed=1)       # the default
    assert (tmtl["a"]["robust_accuracy"], tmtl["b"]["robust_accuracy"]) == (1.0, 0.0)
    assert (task["a"]["robust_accuracy"], task["b"]["robust_accuracy"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="loss"):
        AttackSpec("pgd", loss="sum")
    assert AttackSpec("autoattack").name == "autoattack-lite"        # the old spelling, renamed


def test_adaptive_protocol_scores_a_randomized_model_over_draws():
    from mail_tf.attacks.evaluate import is_randomized, robust_accuracy

    model = _tiny_rpf_model()
    assert is_randomized(model)
    result = robust_accuracy(model, _tiny_dataset(), SignAttack("pgd", eps=0.1, iters=2), "adaptive", eot=3,
                             draws=5, seed=0, limit=5)
    for t in ("a", "b"):
        r = result[t]
        assert r["count"] == 5
        # a mean over 5 draws of 5 images: a multiple of 1/25
        assert abs(r["clean_accuracy"] * 25 - round(r["clean_accuracy"] * 25)) < 1e-6
        assert 0 <= r["robust_majority_accuracy"] <= 1 and 0 <= r["robust_accuracy"] <= 1
        assert set(r["by_attack"]) == {"pgd"}


def test_apgd_reaches_the_linear_optimum_and_checkpoints_follow_the_schedule():
    from mail_tf.attacks.apgd import apgd, checkpoint_steps

    assert checkpoint_steps(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_steps(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]            # the reference's integer schedule
    assert checkpoint_steps(20) == [4, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    rng = np.random.default_rng(5)
    x = [rng.uniform(0.1, 0.9, (3, 5, 5, 3)).astype(np.float32) for _ in range(2)]
    w = [rng.normal(size=(3, 5, 5, 3)).astype(np.float32) for _ in range(2)]
    per_sample = lambda xs: sum(tf.reduce_sum(wi * xi, axis=(1, 2, 3)) for wi, xi in zip(w, xs))
    adv = apgd(per_sample, x, EPS, iters=20, seed=(0, 1))
    for xi, wi, ai in zip(x, w, adv):
        np.testing.assert_allclose(ai.numpy(), xi + EPS * np.sign(wi), atol=1e-6)


def test_apgd_dlr_raises_its_loss_on_a_network(small_mail):
    from mail_tf.attacks.apgd import apgd

    x = images(batch=4, seed=7)
    labels = {"cyto": tf.constant([0, 1, 2, 3]), "derm": tf.constant([1, 2, 3, 4])}
    objective = tmtl_objective(small_mail, labels, kind="dlr")
    adv = apgd(objective, x, EPS, iters=8, seed=(2, 3))
    before = objective([tf.constant(v) for v in x]).numpy()
    after = objective(adv).numpy()
    # APGD starts from a random point of the ball and keeps its best iterate, so the clean point's
    # own loss is not a floor for every sample.
    assert (after >= before - 1e-6).mean() >= 0.75 and after.mean() > before.mean() + 1.0
    for xi, ai in zip(x, adv):
        assert np.abs(ai.numpy() - xi).max() <= EPS + 1e-6 and 0 <= ai.numpy().min() and ai.numpy().max() <= 1


def test_square_fools_an_easy_model_without_gradients():
    from mail_tf.attacks.square import margin_loss, square_attack

    # A linear two-class model on one modality whose margins are within eps of the boundary.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8, 3)).astype(np.float32)
    x = [rng.uniform(0.3, 0.7, (6, 8, 8, 3)).astype(np.float32)]
    score = lambda xs: np.sum(xs[0] * w, axis=(1, 2, 3))
    bias = -score(x) + 0.5 * 0.05 * np.abs(w).sum()      # margin = half of what eps = 0.05 can remove
    y = {"t": np.zeros(6, np.int64)}
    logits = lambda xs: {"t": tf.constant(np.stack([score(xs) + bias, np.zeros(6)], axis=1), tf.float32)}
    loss = lambda xs: margin_loss(y, logits(xs)).numpy()
    assert (loss(x) > 0).all()
    adv, used = square_attack(loss, x, 0.05, queries=300, seed=1)
    assert (loss(adv) == 0).all() and used < 300
    assert np.abs(adv[0] - x[0]).max() <= 0.05 + 1e-6


def test_a_sample_broken_by_any_iterate_stays_broken():
    # The loss rises with x, so BIM walks 0.20, 0.24, 0.28, 0.32, 0.36 -> 0.40; only x in (0.3, 0.35)
    # fools the model. The last iterate is correct again: the attack must return the one that fooled.
    x = [tf.fill((2, 1, 1, 1), 0.2)]

    def loss_fn(xs, fooled_band=True):
        v = tf.reshape(xs[0], [-1])
        return (v, tf.logical_and(v > 0.3, v < 0.35)) if fooled_band else v

    attack = SignAttack("bim", eps=0.5, step=0.04, iters=5)
    np.testing.assert_allclose(sign_attack(loss_fn, x, attack)[0].numpy().ravel(), 0.32, atol=1e-6)
    np.testing.assert_allclose(sign_attack(lambda xs: loss_fn(xs, False), x, attack)[0].numpy().ravel(), 0.40,
                               atol=1e-6)
    # APGD returns its highest-loss point, unless an iterate fooled: here only the start does.
    from mail_tf.attacks.apgd import apgd

    start_only = lambda xs: (tf.reshape(xs[0], [-1]), tf.reshape(tf.abs(xs[0] - 0.2) < 1e-6, [-1]))
    np.testing.assert_allclose(apgd(start_only, x, 0.1, iters=5, random_start=False)[0].numpy().ravel(), 0.2,
                               atol=1e-6)
    best = apgd(lambda xs: start_only(xs)[0], x, 0.1, iters=5, random_start=False)[0].numpy().ravel()
    np.testing.assert_allclose(best, 0.3, atol=1e-6)


def test_mim_normalises_the_gradient_over_the_joint_input():
    from mail_tf.attacks.gradient import l1_normalise

    grads = [tf.fill((2, 4, 4, 3), 3.0), tf.fill((2, 4, 4, 3), -0.01), tf.ones((2, 4, 4, 3))]
    out = l1_normalise(grads, chosen={0, 1})
    joint = sum(tf.reduce_sum(tf.abs(g), axis=(1, 2, 3)) for g in out[:2]).numpy()
    np.testing.assert_allclose(joint, 1.0, rtol=1e-6)
    np.testing.assert_allclose((out[0] / out[1]).numpy(), -300.0, rtol=1e-5)      # relative scale kept
    np.testing.assert_array_equal(out[2].numpy(), grads[2].numpy())               # not attacked: untouched


def test_square_never_spends_a_query_on_a_proposal_that_changes_nothing():
    from mail_tf.attacks.square import square_attack

    seen = []

    def loss_fn(xs):                                      # nothing ever improves: adv stays the start
        seen.append([x.copy() for x in xs])
        return np.ones(len(xs[0]))

    x = [np.ones((3, 2, 2, 1), np.float32)]    # 1-pixel windows, one channel: half the draws would change nothing
    square_attack(loss_fn, x, eps=0.1, queries=30, seed=0)
    start = seen[0][0]
    assert len(seen) == 30
    for proposal in seen[1:]:
        assert all(np.abs(proposal[0][n] - start[n]).max() > 0 for n in range(3))


def test_a_sweep_traces_each_attack_once():
    from mail_tf.attacks.apgd import checkpoint_steps, checkpoint_table
    from mail_tf.attacks.evaluate import AttackSpec, robust_accuracy

    for n in (1, 5, 10, 20, 37, 100):          # the tensor schedule is the reference's, for any budget
        is_check, _ = checkpoint_table(tf.constant(n))
        assert np.flatnonzero(is_check.numpy()).tolist() == checkpoint_steps(n)
    model = _tiny_rpf_model()
    cache = {}
    results = []
    for name in ("pgd", "apgd-ce"):
        for eps, iters in ((0.01, 2), (0.03, 2), (0.05, 3)):
            results.append(robust_accuracy(model, _tiny_dataset(), AttackSpec(name, eps=eps, iters=iters), seed=1,
                                           cache=cache))
    crafters = [ev._craft[name].compiled for ev in cache.values() for name in ev.components]
    assert len(crafters) == 4                   # two attacks x two tasks (each task's own loss)
    assert [c.experimental_get_tracing_count() for c in crafters] == [1, 1, 1, 1]
    assert all(0 <= r[t]["robust_accuracy"] <= 1 for r in results for t in r)


def test_the_loss_sanity_check_at_eps_zero_asks_for_an_unchanged_loss():
    from mail_tf.attacks.sanity import sanity_checks
    from mail_tf.attacks.evaluate import AttackSpec

    def evaluate(spec, protocol):      # every other check passes: nothing survives, more steps no better
        return {"a": {"robust_accuracy": 0.0}}

    def first(eps, clean, adversarial):
        main = {"a": {"loss_clean": clean, "loss_adversarial": adversarial}}
        return sanity_checks(evaluate, AttackSpec("pgd", eps=eps, iters=2), main, "paper", lambda _: None)[0]

    assert first(0.0, 0.5, 0.5) == {"check": "at eps = 0 the attack leaves the loss unchanged", "passed": True,
                                    "detail": {"a": [0.5, 0.5]}}
    assert not first(0.0, 0.5, 0.7)["passed"]
    assert first(0.1, 0.5, 0.7)["passed"] and first(0.1, 0.5, 0.7)["check"] == "the attack increases the loss"
    assert not first(0.1, 0.5, 0.5)["passed"]
