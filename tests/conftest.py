import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mail_tf  # noqa: E402

TASKS = {"cyto": 5, "derm": 7}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


def images(batch=2, size=32, modalities=2, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    return [rng.random((batch, size, size, channels), dtype=np.float32) for _ in range(modalities)]


@pytest.fixture(scope="session")
def small_mail():
    """A narrow MAIL-RN18 on 32x32 inputs: every layer type, quick to run."""
    keras.utils.set_random_seed(7)
    return mail_tf.build_model("mail_rn18", TASKS, input_shape=(32, 32, 3), width=0.25)
