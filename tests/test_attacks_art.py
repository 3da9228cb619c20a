"""Our attacks cross-checked against an independent library: the adversarial-robustness-toolbox (ART).

One modality of a small trained MAIL (PneumoniaMNIST; the BreastMNIST input held fixed) is wrapped as
a single-input Keras model and attacked by ART's FGSM and PGD-l-inf and by ours, with the same eps,
step, iterations and no random start. ART installs without torch (it is in the test extras only).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mail_tf
from mail_tf.attacks.gradient import SignAttack, per_sample_loss, sign_attack
from mail_tf.data import load_experiment, train_dataset
from mail_tf.training.step import make_train_step
from mail_tf.training.trainer import configure_batch_norm

art_attacks = pytest.importorskip("art.attacks.evasion")
art_classifiers = pytest.importorskip("art.estimators.classification")

SAMPLES = 128


@pytest.fixture(scope="module")
def pneumonia_view():
    """(single-input model, test images, labels): one epoch of a width-0.25 MAIL-RN18 at 32 px."""
    breast, pneumonia = load_experiment("medmnist", image_size=32, seed=0)
    keras.utils.set_random_seed(3)
    model = mail_tf.build_model("mail_rn18", {"breastmnist": 2, "pneumoniamnist": 2}, (32, 32, 3), width=0.25,
                                dropout=0.0)
    # Keras's 0.99 leaves the moving statistics far from the batch ones after 74 steps: a constant head.
    configure_batch_norm(model, momentum=0.9)
    step = make_train_step(model, keras.optimizers.Adam(2e-3))
    for images, labels in train_dataset([breast, pneumonia], 64, seed=0, paper_augment=False):
        step(images, labels)

    fixed = tf.constant(breast.images["test"][:1].astype(np.float32) / 255.0)
    x = keras.Input((32, 32, 3))
    partner = keras.layers.Lambda(lambda t: tf.repeat(fixed, tf.shape(t)[0], axis=0))(x)
    view = keras.Model(x, model([partner, x])["pneumoniamnist"])
    images = pneumonia.images["test"][:SAMPLES].astype(np.float32) / 255.0
    return view, images, pneumonia.labels["test"][:SAMPLES].astype(np.int32)


def art_classifier(view):
    return art_classifiers.TensorFlowV2Classifier(
        view, nb_classes=2, input_shape=(32, 32, 3), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def ours(view, images, labels, attack):
    loss = lambda xs: per_sample_loss({"p": tf.constant(labels)}, {"p": view(xs[0], training=False)})
    return sign_attack(loss, [images], attack)[0].numpy()


def accuracy(view, images, labels):
    return float(np.mean(np.argmax(view.predict(images, verbose=0), -1) == labels))


def test_fgsm_and_pgd_agree_with_the_adversarial_robustness_toolbox(pneumonia_view):
    view, images, labels = pneumonia_view
    clean = accuracy(view, images, labels)
    predictions = np.argmax(view.predict(images, verbose=0), -1)
    assert clean >= 0.7 and len(set(predictions)) == 2, (clean, np.bincount(predictions))   # a head worth attacking
    classifier = art_classifier(view)
    onehot = np.eye(2, dtype=np.float32)[labels]

    eps = 2 / 255
    art_fgsm = art_attacks.FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=SAMPLES)
    theirs = art_fgsm.generate(images, y=onehot)
    mine = ours(view, images, labels, SignAttack("fgsm", eps=eps))
    np.testing.assert_allclose(mine, theirs, atol=1e-5)

    eps, step, iters = 2 / 255, 0.5 / 255, 10
    art_pgd = art_attacks.ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=step, max_iter=iters,
                                                   num_random_init=0, batch_size=SAMPLES, verbose=False)
    theirs = accuracy(view, art_pgd.generate(images, y=onehot), labels)
    mine = accuracy(view, ours(view, images, labels, SignAttack("pgd", eps=eps, step=step, iters=iters,
                                                                 random_start=False)), labels)
    assert clean - mine >= 0.1, (clean, mine)            # the attack has work to do, so agreement means something
    assert abs(mine - theirs) <= 0.03, (clean, mine, theirs)
