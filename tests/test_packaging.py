import importlib.util


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
