"""Bad input, one row each: what is tried, and the one message that must name it.

Bad input elsewhere in the suite: robust_eval's numeric flags (test_adversarial_training), predict's
flags and images (test_training), run directories and --overwrite (test_training), serve_passes'
passes (test_adversarial_training), data folders and manifests (test_data).
"""

import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import mail_tf
from mail_tf import data
from mail_tf.data import DataError, sources
from mail_tf.data.images import load_images
from mail_tf.export import export_serving
from mail_tf.layers import SameBatch

RNG = np.random.default_rng(0)
FLOAT = RNG.random((2, 12, 12, 3), dtype=np.float32)
UINT8 = np.round(FLOAT * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    inputs = [keras.Input((8, 8, 3), name=f"{t}_image") for t in "ab"]
    checked = SameBatch()(inputs)
    pooled = [keras.layers.GlobalAveragePooling2D()(x) for x in checked]
    z = keras.layers.Concatenate()(pooled)
    model = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(z), "b": keras.layers.Dense(3, name="b")(z)})
    path = tmp_path_factory.mktemp("served") / "export"
    export_serving(model, path, {"a": ["x", "y"], "b": ["p", "q", "r"]}, image_size=8)
    return tf.saved_model.load(str(path))


def test_float_images_in_the_unit_range_are_served_as_their_8_bit_form(served):
    # Was: float32 cast to uint8 (an all-black image) without a word.
    as_float, as_uint8 = served.serve(FLOAT, FLOAT), served.serve(UINT8, UINT8)
    for task in ("a", "b"):
        np.testing.assert_allclose(as_float[task].numpy(), as_uint8[task].numpy(), atol=1e-6)
    black = served.serve(np.zeros_like(UINT8), np.zeros_like(UINT8))
    assert not np.allclose(as_float["b"].numpy(), black["b"].numpy())
    passes = served.serve_passes(FLOAT, FLOAT, tf.constant(2))
    np.testing.assert_allclose(passes["a"].numpy(), as_uint8["a"].numpy(), atol=1e-6)


SERVING = [
    ("float32 above 1", (FLOAT * 2, FLOAT), tf.errors.InvalidArgumentError, "a_image: float32 images must be in [0, 1]"),
    ("float32 NaN", (FLOAT, np.full_like(FLOAT, np.nan)), tf.errors.InvalidArgumentError,
     "b_image: float32 images must be in [0, 1]"),
    ("batch 1 beside 2", (UINT8[:1], UINT8), tf.errors.InvalidArgumentError, "b_image: batch size differs from a_image"),
    ("empty batch", (UINT8[:0], UINT8[:0]), tf.errors.InvalidArgumentError, "a_image: empty batch"),
    ("5 channels", (np.concatenate([UINT8, UINT8[..., :2]], -1),) * 2, tf.errors.InvalidArgumentError,
     "a_image: expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels"),
    ("int32 over 255", ((FLOAT * 300).astype(np.int32),) * 2, ValueError, "dtype=int32"),     # was: wrapped
    ("float64", (FLOAT.astype(np.float64),) * 2, ValueError, "dtype=float64"),
    ("uint8 beside float32", (UINT8, FLOAT), ValueError, "Could not find matching concrete function"),
]


@pytest.mark.parametrize("case,images,error,message", SERVING, ids=[c[0] for c in SERVING])
def test_serving_refuses(served, case, images, error, message):
    with pytest.raises(error, match=re.escape(message)):
        served.serve(*images)


@pytest.fixture(scope="module")
def pair():
    return mail_tf.build_model("resnet18_pair", {"a": 2, "b": 3}, (32, 32, 3), width=0.25)


@pytest.mark.parametrize("sizes,message", [((1, 3), "modality 2 has a different batch size from modality 1"),
                                           ((0, 0), "empty batch")])
def test_a_model_refuses_modalities_of_different_or_empty_batches(pair, sizes, message):
    # Was: a batch of 1 beside 3 broadcast through the fusion and answered as 3 samples.
    x = [RNG.random((n, 32, 32, 3), dtype=np.float32) for n in sizes]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        pair(x, training=False)
    assert pair([RNG.random((2, 32, 32, 3), dtype=np.float32)] * 2)["b"].shape == (2, 3)


ARRAYS = [
    ("5 channels", np.zeros((2, 8, 8, 5), np.uint8), "expected (N, H, W) or (N, H, W, C) with 1 (grey)"),
    ("one image without a batch axis", np.zeros((8, 8), np.uint8), "expected (N, H, W) or (N, H, W, C)"),
    ("float32 pixels", np.zeros((2, 8, 8, 3), np.float32), "dtype float32: expected uint8 in [0, 255]"),
]


@pytest.mark.parametrize("case,array,message", ARRAYS, ids=[c[0] for c in ARRAYS])
def test_image_arrays_are_checked(case, array, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_images(array, 8)


# ---------------------------------------------------------------- data folders and manifests

def _image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(path)


def _folder(root, counts):
    for name, n in counts.items():
        for i in range(n):
            _image(root / name / f"{i}.png", seed=i)
    return root


def test_unreadable_formats_and_system_folders_are_not_classes_or_images(tmp_path, capsys):
    root = _folder(tmp_path / "data", {"a": 12, "b": 12})
    (root / "c").mkdir()
    (root / "c" / "scan.tif").write_bytes(b"II*\x00")      # was: accepted, then a decode error or an empty class
    _image(root / "__MACOSX" / "a" / "0.png")               # was: taken as a class
    (root / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")    # AppleDouble debris beside a real image
    with pytest.raises(DataError, match=r"class folder '.*/c' holds no images"):
        sources.load_folder(root)
    assert "ignored 1 file(s) of a format TensorFlow cannot decode (.tif)" in capsys.readouterr().err
    (root / "c" / "scan.tif").unlink()
    (root / "c").rmdir()
    source = sources.load_folder(root)
    assert source.class_names == ["a", "b"] and len(source.splits["all"]) == 24


def test_symlinked_class_folders_are_followed_once(tmp_path):
    real = _folder(tmp_path / "elsewhere", {"b": 12})
    root = _folder(tmp_path / "data", {"a": 12})
    (root / "b").symlink_to(real / "b", target_is_directory=True)
    (real / "b" / "loop").symlink_to(real / "b", target_is_directory=True)     # a cycle: walked once
    _image(tmp_path / "more" / "x.png", seed=99)
    (root / "a" / "more").symlink_to(tmp_path / "more", target_is_directory=True)
    items = sources.load_folder(root).splits["all"]
    assert np.bincount(items.labels).tolist() == [13, 12]     # was: 'b' skipped (or its images lost)


def test_a_class_without_training_images_fails_and_small_classes_are_named(tmp_path, capsys):
    root = _folder(tmp_path / "data", {"a": 20, "b": 20, "rare": 2})
    modality = data.load_experiment(f"folder:t={root}", image_size=8)[0]
    err = capsys.readouterr().err
    assert "class 'rare' has no" in err and "(train 2, val 0, test 0)" in err     # was: silently unscored
    assert modality.labels["train"].tolist().count(2) == 2
    (root / "rare" / "1.png").write_bytes(b"broken")          # skipped: 'rare' is left with one image
    (root / "rare" / "0.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="class 'rare' has no training images"):
        data.load_experiment(f"folder:t={root}", image_size=8, skip_bad=True)


def test_a_dataset_too_small_to_split_is_refused_before_training(tmp_path):
    root = _folder(tmp_path / "data", {"a": 1, "b": 1})       # was: a crash after a full epoch
    with pytest.raises(DataError, match=r"the val split holds no images \(train 2, val 0, test 0\)"):
        data.load_experiment(f"folder:t={root}", image_size=8)


MANIFESTS = [
    ("a list", [["0.png"]], "expected {task: {split: [ids]}}, got a list"),
    ("a misspelt task", {"tt": {}}, "tasks ['tt'] do not match the experiment's ['t'] (unknown: ['tt']) (missing: ['t'])"),
    ("a missing split", {"t": {"train": [], "val": []}}, "t: expected the splits ['train', 'val', 'test']"),
    ("an item in train and test", {"t": {"train": ["a/0.png"], "val": [], "test": ["a/0.png"]}},
     "t: item 'a/0.png' is listed in train and in test"),
    ("ids that are not strings", {"t": {"train": [0], "val": [], "test": []}}, "t/train: expected a list of item ids"),
]


@pytest.mark.parametrize("case,manifest,message", MANIFESTS, ids=[c[0] for c in MANIFESTS])
def test_a_split_manifest_is_validated(tmp_path, case, manifest, message):
    root = _folder(tmp_path / "data", {"a": 3, "b": 3})
    with pytest.raises(DataError, match=re.escape(f"split manifest: {message}")):
        data.load_experiment(f"folder:t={root}", image_size=8, manifest=manifest)


# ---------------------------------------------------------------- dataset specs, roots and files

SPECS = [
    ("a trailing comma", "medmnist:breastmnist=,", "an empty entry (a trailing or doubled comma?)"),
    ("a folder without its path", "folder:=", "a folder needs its path, e.g. folder:xray=/data/xrays"),
]


@pytest.mark.parametrize("case,spec,message", SPECS, ids=[c[0] for c in SPECS])
def test_dataset_specs_are_checked(case, spec, message):
    with pytest.raises(DataError, match=re.escape(message)):
        data.resolve_experiment(spec)


def test_a_missing_named_dataset_says_where_to_get_it_and_how_to_point_at_it(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_experiment("sipakmed", data_dir=str(tmp_path))
    message = str(e.value)
    for part in (f"sipakmed: data root '{tmp_path / 'sipakmed'}' does not exist", "https://www.cs.uoi.gr/~marina/",
                 "im_Dyskeratotic", "--data_dir DIR (holding sipakmed/)", "$MAIL_TF_DATA_DIR"):
        assert part in message, (part, message)


def test_a_misspelt_medmnist_root_creates_nothing(tmp_path):
    root = tmp_path / "mednist" / "typo"
    with pytest.raises(DataError, match=re.escape(f"MedMNIST root '{root}' does not exist")):
        data.load_experiment(f"medmnist:breastmnist={root}")
    assert not (tmp_path / "mednist").exists()               # was: created, then the download failed


def test_undecodable_and_oversized_images_are_named_without_tensorflow_internals(tmp_path, monkeypatch):
    from mail_tf.data import images

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError) as e:
        images.decode_file(str(bad), 8)
    assert str(e.value) == f"{bad}: cannot decode the image; expected a JPEG, PNG, BMP, GIF or WebP file that is not damaged"
    # A 20-byte header claiming 100000 x 100000 pixels is refused before any decoding.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02")
    with pytest.raises(DataError, match=re.escape("bomb.png: 100000x100000 pixels is more than the 64,000,000 allowed")):
        images.decode_file(str(bomb), 8)
    ok = tmp_path / "ok.jpg"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(ok)
    assert images.header_size(ok.read_bytes()) == (40, 30)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)         # the cap is a setting (MAIL_TF_MAX_IMAGE_PIXELS)
    with pytest.raises(DataError, match="40x30 pixels is more than the 1,000 allowed"):
        images.decode_file(str(ok), 8)


# ---------------------------------------------------------------- numeric flags of every CLI

CLI_FLAGS = [   # (entry point, bad flag, expected line); checked before anything loads
    ("experiments.train", "--epochs=0", "epochs=0: expected at least 1"),
    ("experiments.train", "--weight_decay=-1", "weight_decay=-1.0: expected at least 0"),
    ("experiments.train", "--adv_eps=2", "adv_eps=2.0: expected at most 1"),
    ("experiments.train", "--early_stopping_patience=-1", "early_stopping_patience=-1: expected at least 0"),
    ("experiments.benchmark", "--steps=0", "--steps=0: expected >= 1"),
    ("experiments.benchmark", "--batch_size=-2", "--batch_size=-2: expected >= 1"),
    ("experiments.data", "--batch_size=0", "--batch_size=0: expected >= 1"),
    ("experiments.data", "--seed=-1", "--seed=-1: expected >= 0"),
    ("experiments.uncertainty", "--bins=0", "--bins=0: expected >= 1"),
    ("experiments.uncertainty", "--passes=0", "--passes=0: expected >= 1"),
    ("experiments.predict", "--top=-1", "--top=-1: expected 0 (every class) or a positive number"),
]


@pytest.mark.parametrize("module", sorted({c[0] for c in CLI_FLAGS}))
def test_every_cli_refuses_an_out_of_range_number_in_one_line(module, tmp_path):
    # One interpreter per entry point runs its cases: main() with the flags parsed as on a command line.
    cases = [(flag, expected) for m, flag, expected in CLI_FLAGS if m == module]
    script = "\n".join([
        "import importlib",
        "from absl import flags",
        f"m = importlib.import_module({module!r})",
        f"for flag, expected in {cases!r}:",
        "    for name in list(flags.FLAGS):",
        "        flags.FLAGS[name].unparse()",
        f"    argv = flags.FLAGS([{module!r}, flag, '--runs=x', '--model={tmp_path / 'none'}'], known_only=True)",
        "    try:",
        "        m.main(argv[:1])",
        "        print('RESULT no error')",
        "    except SystemExit as e:",
        "        print('RESULT exit |', e.code)",
        "    except Exception as e:",
        "        print('RESULT', type(e).__name__, '|', e)",
    ])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == len(cases), proc.stdout
    for line, (flag, expected) in zip(lines, cases):
        assert expected in line and "no error" not in line, (flag, line)
