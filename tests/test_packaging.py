"""Packaging: no torch, Keras 3 and TF >= 2.16, and the wheel. The wheel installs no top-level
`datasets` (Hugging Face's name), carries the embedded data as mail_tf's package data, and every
module of it imports from the installed copy."""

import importlib.util
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, pkgutil, sys
import datasets
assert datasets.STAND_IN, datasets.__file__                  # the stand-in, not ours
import mail_tf, experiments
assert mail_tf.__file__.startswith(sys.argv[1]), mail_tf.__file__   # the wheel's copy, not the checkout
for module in pkgutil.walk_packages(mail_tf.__path__, "mail_tf."):
    importlib.import_module(module.name)
# The entry points define flags of the same names: listed, not imported into one process.
print(" ".join(sorted(m.name for m in pkgutil.iter_modules(experiments.__path__))))
from mail_tf.data import load_experiment
from mail_tf.data.registry import EMBEDDED_DIR
assert str(EMBEDDED_DIR).startswith(sys.argv[1]), EMBEDDED_DIR
breast, pneumonia = load_experiment("medmnist", image_size=28, seed=0)
print(len(breast.labels["train"]), len(pneumonia.labels["test"]))
"""


def test_torch_is_not_installed():
    assert importlib.util.find_spec("torch") is None
    assert importlib.util.find_spec("torchvision") is None


def test_medmnist_metadata_is_available_without_torch():
    from medmnist.info import INFO

    assert INFO["breastmnist"]["MD5"] == "750601b1f35ba3300ea97c75c52ff8f6"


def test_keras_3_and_tensorflow_2_16_or_newer():
    import keras
    import tensorflow as tf

    assert int(keras.__version__.split(".")[0]) == 3
    assert tuple(int(p) for p in tf.__version__.split(".")[:2]) >= (2, 16)


def test_wheel_ships_the_embedded_data_and_leaves_datasets_to_its_owner(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("mail_tf-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("datasets/") for n in names), [n for n in names if n.startswith("datasets")]
    assert {"mail_tf/embedded/medmnist/breastmnist.npz", "mail_tf/embedded/medmnist/pneumoniamnist.npz"} <= set(names)

    # A fresh environment: the wheel and a stand-in `datasets` in a folder of their own, in front of
    # this environment's dependencies (TensorFlow, ...) but without this checkout on the path.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    (site / "datasets").mkdir()
    (site / "datasets" / "__init__.py").write_text("STAND_IN = True\n")
    env = {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-S", "-c", CHECK, str(site)], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry_points, counts = proc.stdout.strip().splitlines()[-2:]
    assert entry_points.split() == sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__"), entry_points
    train, test = map(int, counts.split())
    assert train > 100 and test > 100, proc.stdout
