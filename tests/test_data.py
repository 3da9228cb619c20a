"""Data layer: real data in ../shared/data, fake trees for the other layouts, clear errors,
reproducible splits and pairing, the paper's augmentation, evaluation coverage."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mail_tf import data
from mail_tf.data import augment, sources
from mail_tf.data.images import load_images
from mail_tf.data.splits import make_splits, manifest_of, split_indices

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


def _write_image(path, size=(20, 16), seed=0, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)


# ---------------------------------------------------------------- real data

@needs_shared
def test_ham10000_counts_and_lesion_grouped_split():
    source = sources.load_ham10000(SHARED / "ham10000")
    items = source.splits["all"]
    counts = dict(zip(source.class_names, np.bincount(items.labels)))
    assert counts == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
    assert len(set(items.groups)) == 7470
    splits = make_splits(source, seed=0)
    lesions = {s: set(it.groups) for s, it in splits.items()}
    assert not (lesions["train"] & lesions["val"] or lesions["train"] & lesions["test"]
                or lesions["val"] & lesions["test"])
    assert sum(len(it) for it in splits.values()) == 10015
    assert 0.77 < len(splits["train"]) / 10015 < 0.83
    arr, keep = load_images(splits["test"].images[:24], 64)
    assert arr.shape == (24, 64, 64, 3) and arr.dtype == np.uint8 and len(keep) == 24


@needs_shared
def test_brain_mri_official_split_counts():
    source = sources.load_brain_mri(SHARED / "brain_tumor_mri")
    assert source.class_names == ["glioma", "meningioma", "notumor", "pituitary"]
    assert np.bincount(source.splits["trainval"].labels).tolist() == [1321, 1339, 1591, 1457]
    assert np.bincount(source.splits["test"].labels).tolist() == [300, 306, 405, 300]
    splits = make_splits(source, seed=0)
    assert len(splits["train"]) + len(splits["val"]) == 5708 and len(splits["test"]) == 1311
    arr, _ = load_images(splits["val"].images[:8], 128)  # mixed grey/RGB JPEGs -> RGB
    assert arr.shape == (8, 128, 128, 3)


def test_embedded_medmnist_experiment_shapes_and_range():
    mods = data.load_experiment("medmnist", image_size=32)
    assert [m.task for m in mods] == ["breastmnist", "pneumoniamnist"]
    assert [len(m.labels["test"]) for m in mods] == [156, 624]
    xs, ys = next(iter(data.train_dataset(mods, 8, seed=0)))
    assert [x.shape for x in xs] == [(8, 32, 32, 3)] * 2
    assert all(x.dtype == tf.float32 and float(tf.reduce_min(x)) >= 0 and float(tf.reduce_max(x)) <= 1 for x in xs)
    assert set(ys) == {"breastmnist", "pneumoniamnist"}


def test_epoch_batches_are_reproducible_and_pairs_reshuffle_on_request():
    mods = data.load_experiment("medmnist", image_size=32)

    def first_labels(epoch, shuffle_pairs):
        ds = data.train_dataset(mods, 256, seed=1, paper_augment=False, epoch=epoch, shuffle_pairs=shuffle_pairs)
        _, ys = next(iter(ds))
        return ys["breastmnist"].numpy(), ys["pneumoniamnist"].numpy()

    def pairs(epoch, shuffle_pairs):
        # Which breast label goes with which pneumonia label over the whole epoch.
        ds = data.train_dataset(mods, 4096, seed=1, paper_augment=False, epoch=epoch, shuffle_pairs=shuffle_pairs)
        return sorted(zip(*[np.concatenate([y[t].numpy() for _, y in ds]).tolist()
                            for t in ("breastmnist", "pneumoniamnist")]))

    for flag in (False, True):
        a, b = first_labels(3, flag), first_labels(3, flag)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))       # same seed and epoch: same batches
    assert pairs(1, False) == pairs(2, False)                         # one pairing for the whole run
    assert pairs(1, True) != pairs(2, True)                           # new partners each epoch


# ---------------------------------------------------------------- fake layouts

def test_sipakmed_layout(tmp_path):
    for c, cls in enumerate(sources.SIPAKMED_CLASSES):
        for i in range(3):
            _write_image(tmp_path / f"im_{cls}" / "CROPPED" / f"{i:03d}.bmp", seed=c * 10 + i)
        _write_image(tmp_path / f"im_{cls}" / f"{cls}_full.bmp", seed=99)  # full slides are not cells
    source = sources.load_sipakmed(tmp_path)
    assert np.bincount(source.splits["all"].labels).tolist() == [3] * 5
    arr, _ = load_images(source.splits["all"].images, 32)
    assert arr.shape == (15, 32, 32, 3)


def test_iqothnccd_layout_with_grey_images(tmp_path):
    for c, folder in enumerate(sources.IQOTHNCCD_FOLDERS.values()):
        for i in range(2):
            _write_image(tmp_path / folder / f"{folder} ({i}).jpg", seed=c * 5 + i, mode="L")
    source = sources.load_iqothnccd(tmp_path)
    assert source.class_names == ["benign", "malignant", "normal"]
    arr, _ = load_images(source.splits["all"].images, 32)
    assert arr.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])  # grey -> RGB


def test_generic_folder_layout_and_spec_string(tmp_path):
    for cls in ("normal", "opacity"):
        for i in range(10):
            _write_image(tmp_path / "xray" / cls / "sub" / f"{i}.png", seed=i)
    mods = data.load_experiment(f"folder:xray={tmp_path / 'xray'},medmnist:breastmnist=", image_size=32)
    assert mods[0].class_names == ["normal", "opacity"]
    assert sum(len(v) for v in mods[0].labels.values()) == 20


# ---------------------------------------------------------------- clear errors

def test_corrupt_image_is_named_or_skipped_and_reported(tmp_path, capsys):
    good = tmp_path / "good.png"
    _write_image(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(data.DataError, match="bad.jpg: cannot decode the image; expected a JPEG, PNG"):
        load_images([str(good), str(bad)], 16)
    arr, keep = load_images([str(good), str(bad)], 16, skip_bad=True, label="x")
    assert arr.shape[0] == 1 and keep.tolist() == [0]
    assert "skipped 1 unreadable image" in capsys.readouterr().err


def test_empty_class_folder(tmp_path):
    _write_image(tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(data.DataError, match="holds no images"):
        sources.load_folder(tmp_path)


def test_missing_metadata_column_and_missing_image(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id\nHAM_1,ISIC_1\n")
    with pytest.raises(data.DataError, match=r"missing column\(s\) \['dx'\]"):
        sources.load_ham10000(tmp_path)
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nHAM_1,ISIC_1,nv\n")
    with pytest.raises(data.DataError, match="line 2: no image file ISIC_1.jpg"):
        sources.load_ham10000(tmp_path)


def test_medmnist_missing_file_names_url_and_directory(tmp_path):
    with pytest.raises(data.DataError, match=r"bloodmnist.npz is not in .*zenodo.*put it in"):
        sources.load_medmnist(tmp_path, "bloodmnist", download=False)


def test_medmnist_wrong_md5_and_wrong_keys(tmp_path, monkeypatch):
    path = tmp_path / "breastmnist.npz"
    np.savez(path, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(data.DataError, match="does not match the official 750601b1"):
        sources.load_medmnist(tmp_path, "breastmnist")
    info = dict(sources._medmnist_info("breastmnist"), MD5=hashlib.md5(path.read_bytes()).hexdigest())
    monkeypatch.setattr(sources, "_medmnist_info", lambda flag: info)
    with pytest.raises(data.DataError, match="missing arrays"):
        sources.load_medmnist(tmp_path, "breastmnist")


def test_unknown_experiment_and_missing_root(tmp_path):
    with pytest.raises(data.DataError, match="unknown experiment 'sipakmedd'.*medmnist"):
        data.resolve_experiment("sipakmedd")
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_experiment(f"ham10000={tmp_path / 'nowhere'}")


# ---------------------------------------------------------------- reproducibility

def test_same_seed_same_split_and_pairing_other_seed_differs():
    labels = np.repeat(np.arange(3), 50)
    groups = [f"g{i // 2}" for i in range(150)]
    a, b, c = (split_indices(labels, groups, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    train_idx = data.train_index([10, 37], seed=1)
    same = data.train_index([10, 37], seed=1)
    other = data.train_index([10, 37], seed=2)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(train_idx, same))
    assert not np.array_equal(train_idx[0][0], other[0][0])


def test_manifest_reproduces_the_split(tmp_path):
    source = sources.Source("toy", ["a", "b"], {"all": sources.Items(
        np.zeros((40, 4, 4), np.uint8), np.repeat([0, 1], 20), [f"row:{i}" for i in range(40)])})
    first = make_splits(source, seed=3)
    path = tmp_path / "splits.json"
    data.write_manifest(path, {"toy": manifest_of(first)})
    again = make_splits(source, seed=99, manifest=data.read_manifest(path)["toy"])
    assert manifest_of(again) == manifest_of(first)
    broken = {"train": ["row:999"], "val": [], "test": []}
    with pytest.raises(data.DataError, match="not in the data"):
        make_splits(source, manifest=broken)


def test_training_pairs_cover_every_augmented_copy():
    """Paper augmentation: each image once per transform; the smaller set is enlarged to the larger."""
    (src_a, tid_a), (src_b, tid_b) = data.train_index([5, 12], paper_augment=True, seed=0)
    assert len(src_a) == len(src_b) == 48
    pairs_b = sorted(zip(src_b.tolist(), tid_b.tolist()))
    assert pairs_b == sorted((i, t) for i in range(12) for t in range(4))
    seen_a = {(i, t) for i, t in zip(src_a.tolist(), tid_a.tolist())}
    assert {(i, t) for i in range(5) for t in range(4)} <= seen_a
    extras = len(src_a) - 20
    assert extras == 28 and np.sum(tid_a != 0) == 15 + 28  # extras are augmented copies


def test_evaluation_scores_every_image_of_every_task_once():
    rng = np.random.default_rng(0)
    mods = [data.Modality(t, ["x", "y"], {"test": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)},
                          {"test": np.arange(n) % 2}, {}) for t, n in (("a", 7), ("b", 19))]
    partners = data.eval_partners(mods, "test", seed=0)
    assert partners["a"][0].tolist() == list(range(7)) and partners["b"][1].tolist() == list(range(19))
    assert np.array_equal(partners["b"][0], data.eval_partners(mods, "test", seed=0)["b"][0])
    sets = data.eval_datasets(mods, "test", batch_size=4)
    for task, n in (("a", 7), ("b", 19)):
        labels = np.concatenate([y[task].numpy() for _, y in sets[task]])
        assert labels.tolist() == (np.arange(n) % 2).tolist()


# ---------------------------------------------------------------- augmentation

def test_paper_transforms():
    x = tf.random.stateless_uniform((2, 32, 32, 3), seed=(1, 1))
    out = augment.paper_transform(x, tf.constant([0, 2]))
    np.testing.assert_array_equal(out[0].numpy(), x[0].numpy())  # id 0 is the original
    np.testing.assert_allclose(out[1, 5:, 5:].numpy(), x[1, :-5, :-5].numpy(), atol=1e-6)  # shift (5, 5)
    ids = tf.constant([3, 1, 0, 2, 1, 3])      # each image transformed by its own id, order kept
    batch = tf.random.stateless_uniform((6, 16, 16, 1), seed=(2, 2))
    mixed = augment.paper_transform(batch, ids).numpy()
    singles = [batch, augment.rotate(batch, 20.0), augment.translate(batch, 5.0, 5.0),
               augment.gaussian_blur3(batch)]
    for i, t in enumerate(ids.numpy()):
        np.testing.assert_allclose(mixed[i], singles[t][i].numpy(), atol=1e-6)
    blurred = augment.gaussian_blur3(x)
    assert float(tf.math.reduce_std(blurred)) < float(tf.math.reduce_std(x))
    np.testing.assert_allclose(float(tf.reduce_mean(blurred)), float(tf.reduce_mean(x)), atol=0.01)
    square = tf.pad(tf.ones((1, 8, 8, 1)), [[0, 0], [12, 12], [12, 12], [0, 0]])
    rotated = augment.rotate(square, 20.0)
    np.testing.assert_allclose(float(tf.reduce_sum(rotated)), 64.0, rtol=0.05)  # area kept
    assert not np.allclose(rotated.numpy(), square.numpy())
    r = augment.random_transform(x, tf.constant([3, 4]))
    assert r.shape == x.shape and not np.allclose(r.numpy(), x.numpy())


def test_missing_class_folders_are_all_listed(tmp_path):
    _write_image(tmp_path / "im_Dyskeratotic" / "CROPPED" / "1.bmp")
    (tmp_path / "im_Koilocytotic").mkdir()  # present, but without CROPPED/
    with pytest.raises(data.DataError, match=r"missing \[.*im_Koilocytotic/CROPPED.*im_Superficial-Intermediate"):
        sources.load_sipakmed(tmp_path)


def test_first_bad_file_stops_decoding(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"broken")
    good = tmp_path / "good.png"
    _write_image(good)
    with pytest.raises(data.DataError, match="bad.png"):
        load_images([str(bad)] + [str(good)] * 400, 16)


def test_notebook_split_protocol_reproduces_the_leak_and_says_so(capsys):
    from mail_tf.data.pipeline import prepare_modality
    from mail_tf.training import TrainConfig

    rng = np.random.default_rng(0)
    n = 200                                  # 50 "lesions" of 4 images, two classes
    groups = [f"lesion{i // 4}" for i in range(n)]
    items = sources.Items(rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), np.repeat([0, 1], n // 2),
                          [f"img{i}" for i in range(n)], groups)
    source = sources.Source("toy", ["a", "b"], {"all": items})
    grouped = prepare_modality("toy", source, 16, seed=0)
    assert grouped.leakage is None
    split_groups = {s: {groups[int(i[3:])] for i in ids} for s, ids in grouped.manifest.items()}
    assert not split_groups["train"] & split_groups["test"]

    leaky = prepare_modality("toy", source, 16, seed=0, split_protocol="notebook")
    assert sum(len(v) for v in leaky.labels.values()) == 4 * n          # four copies of every image
    leak = leaky.leakage
    assert leak["test_items"] == len(leaky.labels["test"]) and leak["copies_per_image"] == 4
    # A test copy's image has three other copies: it is in train unless all three missed it (~1 %).
    assert leak["test_items_whose_image_is_in_train"] >= 0.9 * leak["test_items"]
    assert leak["test_items_whose_group_is_in_train"] >= leak["test_items_whose_image_is_in_train"]
    assert "split_protocol=notebook augments before splitting" in capsys.readouterr().err
    copies = {i.split("#")[1] for i in leaky.manifest["train"]}
    assert copies == {"t0", "t1", "t2", "t3"}
    again = prepare_modality("toy", source, 16, seed=0, split_protocol="notebook", manifest=leaky.manifest)
    np.testing.assert_array_equal(again.images["test"], leaky.images["test"])      # resumable
    with pytest.raises(ValueError, match="paper_augment=True: expected off"):
        TrainConfig(dataset="toy", split_protocol="notebook", paper_augment=True)
