"""Grad-CAM / Grad-CAM++ per task and modality, cross-modal maps and occlusion (mail_tf.explain)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from conftest import TASKS, images, tiny_mail
from mail_tf.explain import GradCAM, occlusion


@pytest.fixture(scope="module")
def mail64():
    """At 64 px the default targets (stage 4) are 2x2 maps; at 32 px they would be a single pixel."""
    return tiny_mail(64, seed=5)


@pytest.fixture(scope="module")
def cam64(mail64):
    return GradCAM(mail64)           # one compiled function for every test below


def test_maps_for_every_task_through_every_branch_at_input_resolution(mail64, cam64):
    x = images(batch=3, size=64, seed=1)
    maps = cam64(x)
    predicted = {t: np.argmax(v, -1) for t, v in mail64(x, training=False).items()}
    for task in TASKS:
        np.testing.assert_array_equal(maps["explained"][task], predicted[task])
        assert len(maps[task]) == 2                               # own modality and the cross-modal one
        for m in maps[task]:
            assert m.shape == (3, 64, 64) and m.min() >= 0 and m.max() <= 1
            peaks = m.max(axis=(1, 2))                            # 1, or 0 where no evidence is positive
            assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0)), peaks
    assert max(m.max() for t in TASKS for m in maps[t]) == pytest.approx(1.0)
    assert maps["draws"] == "deterministic model"
    assert not np.allclose(maps["cyto"][0], maps["derm"][0])     # tasks are explained apart


def test_a_batch_gives_the_maps_of_each_pair_alone_and_traces_once(cam64):
    x = images(batch=3, size=64, seed=2)
    gc = cam64
    together = gc(x)
    for i in range(3):
        alone = gc([v[i:i + 1] for v in x], classes={t: together["explained"][t][i:i + 1] for t in TASKS})
        for task in TASKS:
            for a, b in zip(alone[task], together[task]):
                np.testing.assert_allclose(a[0], b[i], atol=1e-4)
    assert gc._maps.experimental_get_tracing_count() == 1


def test_bad_targets_are_named(mail64):
    with pytest.raises(ValueError, match="no layer 'nope'"):
        GradCAM(mail64, targets=["nope", "derm_stage3_block2"])
    with pytest.raises(ValueError, match="one layer name per modality"):
        GradCAM(mail64, targets=["cyto_stage3_block2"])
    with pytest.raises(ValueError, match="method must be one of"):
        GradCAM(mail64, method="lime")


def _square_model():
    """Class 1's logit is the brightness of modality a inside rows/cols 8-15; the 'features' are the
    image itself, so a correct Grad-CAM and occlusion peak inside that square."""
    a, b = keras.Input((24, 24, 3)), keras.Input((24, 24, 3))
    fa = keras.layers.Rescaling(1.0, name="fa")(a)
    fb = keras.layers.Rescaling(1.0, name="fb")(b)
    z = keras.layers.Concatenate(name="concat")([fa, fb])
    mask = np.zeros((1, 24, 24, 6), np.float32)
    mask[:, 8:16, 8:16, :3] = 1.0
    score = keras.layers.Lambda(lambda t: tf.reduce_sum(t * mask, axis=[1, 2, 3])[:, None] / 192.0)(z)
    logits = keras.layers.Concatenate(name="t")([score * 0.0, score])
    return keras.Model([a, b], {"t": logits})


def test_grad_cam_and_occlusion_peak_where_the_evidence_is():
    model = _square_model()
    rng = np.random.default_rng(0)
    x = [rng.uniform(0.0, 0.2, (4, 24, 24, 3)).astype(np.float32) for _ in range(2)]
    x[0][:, 8:16, 8:16] += 0.7                     # the object the task looks at
    classes = {"t": np.ones(4, np.int32)}
    maps = GradCAM(model)(x, classes=classes)
    plus = GradCAM(model, method="gradcam++")(x, classes=classes)
    named = GradCAM(model, targets=["fa", "fb"])(x, classes=classes)       # the default targets, by name
    np.testing.assert_allclose(named["t"][0], maps["t"][0], atol=1e-6)
    occluded = occlusion(model, x, "t", 0, classes=classes["t"], patch=4, stride=2, fill=0.0)
    for heat in (maps["t"][0], plus["t"][0], occluded):
        for i in range(4):
            r, c = np.unravel_index(heat[i].argmax(), heat[i].shape)
            assert 8 <= r < 16 and 8 <= c < 16, (r, c)
        assert heat[:, 8:16, 8:16].mean() > 3 * heat[:, :6].mean()
    assert occluded[:, :6].max() == 0.0            # occluding what the score ignores changes nothing
    assert np.allclose(maps["t"][1], 0.0)          # modality b carries no evidence for the task


def test_gallery_picks_the_first_correct_and_wrong_pairs():
    from mail_tf.explain import right_and_wrong

    correct, wrong = right_and_wrong(np.array([0, 1, 1, 0, 2]), np.array([0, 0, 1, 1, 2]), 2)
    assert correct == [0, 2] and wrong == [1, 3]
