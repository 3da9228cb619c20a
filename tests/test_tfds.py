"""TFDS builders on tiny fake manual dirs (tests/data/tfds_fake, never the real data): each builds
with tfds.testing, and `tfds:KIND` loads the very splits and pixels of the in-memory reader."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mail_tf.data import DataError, load_experiment, tfds_builders

FAKE = Path(__file__).parent / "data" / "tfds_fake"


def builder_test(builder, folder, splits, **settings):
    """A tfds.testing case: `builder` prepared from FAKE/`folder` gives `splits` examples."""
    return type(f"{builder.__name__}Test", (tfds.testing.DatasetBuilderTestCase,),
                {"DATASET_CLASS": builder, "EXAMPLE_DIR": str(FAKE / folder), "SPLITS": splits, **settings})


# HAM10000's 70 lesions split 8/1/1 of each diagnosis's 10; Brain MRI's Testing/ is test and val is
# 1/9 of Training/.
Ham10000Test = builder_test(tfds_builders.Ham10000, "ham10000", {"train": 82, "val": 11, "test": 12})
BrainMriTest = builder_test(tfds_builders.BrainMri, "brain_tumor_mri", {"train": 32, "val": 4, "test": 8})
SipakmedTest = builder_test(tfds_builders.Sipakmed, "sipakmed", {"train": 40, "val": 5, "test": 5})
IqothnccdTest = builder_test(tfds_builders.Iqothnccd, "iqothnccd", {"train": 24, "val": 3, "test": 3})
ClassFolderTest = builder_test(tfds_builders.ClassFolder, "folder", {"train": 16, "val": 2, "test": 2},
                               BUILDER_CONFIG_NAMES_TO_TEST=[tfds_builders.folder_config(FAKE / "folder", "pets")])


@pytest.mark.parametrize("kind,folder", [("ham10000", "ham10000"), ("brain_mri", "brain_tumor_mri"),
                                         ("folder:pets", "folder")])
def test_tfds_splits_and_pixels_equal_the_in_memory_path(tmp_path, kind, folder):
    plain = f"folder:pets={FAKE / folder}" if kind.startswith("folder") else f"{kind}={FAKE / folder}"
    # Prepared on first use from the dataset's folder below the data directory.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / ("pets" if folder == "folder" else folder)).symlink_to(FAKE / folder)
    for seed in (0, 1):     # the builder stores seed 0's splits; other seeds re-split identically
        ours = load_experiment(plain, 16, seed)[0]
        theirs = load_experiment(f"tfds:{kind}={tmp_path / 'tfds'}", 16, seed, data_dir=str(data_dir))[0]
        assert theirs.task == ours.task
        assert theirs.class_names == ours.class_names
        assert theirs.manifest == ours.manifest
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(theirs.labels[split], ours.labels[split])
            np.testing.assert_array_equal(theirs.images[split], ours.images[split])
    assert any((tmp_path / "tfds").iterdir())


def test_tfds_builder_splits_keep_lesions_apart(tmp_path):
    b = tfds_builders.prepare("ham10000", FAKE / "ham10000", tmp_path)
    groups = {s: {g.decode() for g in b.as_dataset(split=s).map(lambda e: e["group"]).as_numpy_iterator()}
              for s in ("train", "val", "test")}
    assert groups["train"] and groups["val"] and groups["test"]
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert b.info.citation and b.info.homepage and b.info.features["label"].names[0] == "akiec"


def test_tfds_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="no TFDS builder for 'chestx'"):
        load_experiment(f"tfds:chestx={tmp_path}", 16, data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"no prepared TFDS data under .* and no download at .*ham10000"):
        load_experiment(f"tfds:ham10000={tmp_path}", 16, data_dir=str(tmp_path))
    with pytest.raises(DataError, match="needs its name"):
        load_experiment(f"tfds:folder={tmp_path}", 16, data_dir=str(tmp_path))
