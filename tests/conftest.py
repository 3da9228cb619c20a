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


def tiny_mail(size=32, seed=7):
    """A narrow MAIL-RN18 (width 0.25) on size x size inputs: every layer type, quick to run."""
    keras.utils.set_random_seed(seed)
    return mail_tf.build_model("mail_rn18", TASKS, input_shape=(size, size, 3), width=0.25)


def cli(module, *args, **kwargs):
    """Run `python -m module args...` and return the finished process, its output as text."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, **kwargs)


def assert_refused(proc, message=""):
    """A CLI run refused as bad input should be: a non-zero exit, `message` in stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def images(batch=2, size=32, modalities=2, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    return [rng.random((batch, size, size, channels), dtype=np.float32) for _ in range(modalities)]


@pytest.fixture(scope="session")
def small_mail():
    """A narrow MAIL-RN18 on 32x32 inputs: every layer type, quick to run."""
    return tiny_mail(32, seed=7)
