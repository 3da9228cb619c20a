"""TFDS builders of the datasets mail-tf reads, prepared once from a manual download.

Each builder reads the layout of its reader in `sources.py` from `manual_dir` (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`) and stores every image file's own bytes, unchanged (no decoding, no
re-encoding), with its label, its manifest id, its group (HAM10000's `lesion_id`) and its position
in the reader's order. The builder's `train` / `val` / `test` splits are the in-memory path's
splits for seed 0: official splits kept (brain MRI's `Testing/` is `test`), the rest seeded and
stratified 80/10/10 with whole groups on one side, so no HAM10000 lesion straddles two splits.

`tfds_source` turns a prepared dataset back into the reader's `Source` (items in the reader's
order), so `--dataset tfds:ham10000` splits, for any seed, exactly as `--dataset ham10000` does.

  from mail_tf.data import tfds_builders
  tfds_builders.prepare("ham10000", manual_dir="/data/ham10000", data_dir="~/tensorflow_datasets")
  tfds.builder("ham10000", data_dir=...).as_dataset(split="test")   # or tfds.load
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mail_tf.data import sources
from mail_tf.data.sources import DataError, Items, Source
from mail_tf.data.splits import SPLITS, make_splits

SPLIT_SEED = 0      # the builders' train/val/test are the in-memory splits of this seed


class _MedicalImages(tfds.core.GeneratorBasedBuilder):
    """Common to every builder: features, splits and the generator; subclasses say what to read."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: file bytes as distributed, splits of mail-tf's seed 0."}
    CLASSES = ()
    OFFICIAL_TEST = False     # the reader keeps an official test split ("test" beside "trainval")
    GROUPED = False           # items carry groups (the reader's Items.groups)
    HOMEPAGE = CITATION = LICENSE = DESCRIPTION = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=list(self.class_names())),
                "id": tfds.features.Text(),          # the split manifest's id (path relative to the root)
                "group": tfds.features.Text(),       # items of one group never straddle two splits
                "index": np.int64,                   # position in the reader's order (re-splitting)
            }),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )

    def class_names(self):
        return self.CLASSES

    def read(self, root):
        """The reader's Source for the manual download at `root`."""
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        source = self.read(Path(dl_manager.manual_dir))
        if list(source.class_names) != list(self.class_names()):
            raise DataError(f"{self.name}: classes {source.class_names} of {dl_manager.manual_dir} are not the "
                            f"builder's {list(self.class_names())}")
        order = {item_id: i for i, item_id in enumerate(pooled_ids(source))}
        splits = make_splits(source, seed=SPLIT_SEED)
        return {split: self._generate_examples(splits[split], order) for split in SPLITS}

    def _generate_examples(self, items, order):
        for k, item_id in enumerate(items.ids):
            group = items.groups[k] if items.groups is not None else item_id
            yield item_id, {"image": Path(items.images[k]), "label": int(items.labels[k]), "id": item_id,
                            "group": group, "index": order[item_id]}


def pooled_ids(source):
    """Item ids of a Source in the reader's order: its splits in sorted name order, each in its order."""
    return [i for name in sorted(source.splits) for i in source.splits[name].ids]


class Ham10000(_MedicalImages):
    """HAM10000 dermoscopy: 7 diagnoses, 10,015 images of 7,470 lesions, split by lesion_id."""

    CLASSES = sources.HAM10000_CLASSES
    GROUPED = True
    DESCRIPTION = ("HAM10000 dermoscopic images (Tschandl et al. 2018), 7 diagnoses (dx). Several images show one "
                   "lesion: splits are by lesion_id, stratified by diagnosis, 80/10/10 (mail-tf seed 0).")
    HOMEPAGE = "https://doi.org/10.7910/DVN/DBW86T"
    LICENSE = "CC BY-NC 4.0"
    CITATION = """@article{tschandl2018ham10000,
  title={The HAM10000 dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},
  author={Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal={Scientific Data}, volume={5}, pages={180161}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Download HAM10000 from https://doi.org/10.7910/DVN/DBW86T and put "
                                    "HAM10000_metadata.csv and the ISIC_*.jpg images (any subfolders, e.g. "
                                    "HAM10000_images_part_1/ and _part_2/) in the manual dir.")

    def read(self, root):
        return sources.load_ham10000(root)


class BrainMri(_MedicalImages):
    """Nickparvar brain tumour MRI: 4 classes, official Training / Testing folders."""

    CLASSES = sources.BRAIN_MRI_CLASSES
    OFFICIAL_TEST = True
    DESCRIPTION = ("Brain tumour MRI (Nickparvar 2021), 4 classes. test is the official Testing/ folder; val is "
                   "carved from Training/ (1/9, stratified, mail-tf seed 0).")
    HOMEPAGE = "https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset"
    LICENSE = "CC0 1.0"
    CITATION = """@misc{nickparvar2021brain,
  title={Brain Tumor MRI Dataset}, author={Nickparvar, Msoud}, year={2021}, publisher={Kaggle},
  doi={10.34740/KAGGLE/DSV/2645886}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Download the dataset from https://www.kaggle.com/datasets/masoudnickparvar/"
                                    "brain-tumor-mri-dataset and put its Training/<class>/ and Testing/<class>/ "
                                    "folders (glioma, meningioma, notumor, pituitary) in the manual dir.")

    def read(self, root):
        return sources.load_brain_mri(root)


class Sipakmed(_MedicalImages):
    """SIPaKMeD cervical cytology: 5 cell classes, the cropped single cells (CROPPED/*.bmp)."""

    CLASSES = sources.SIPAKMED_CLASSES
    DESCRIPTION = "SIPaKMeD Pap smear cells (Plissiti et al. 2018), 5 classes, cropped cells; 80/10/10 (seed 0)."
    HOMEPAGE = "https://www.cs.uoi.gr/~marina/sipakmed.html"
    LICENSE = "research use (see the homepage)"
    CITATION = """@inproceedings{plissiti2018sipakmed,
  title={SIPaKMeD: A new dataset for feature and image based classification of normal and pathological cervical cells in Pap smear images},
  author={Plissiti, Marina E. and Dimitrakopoulos, Panagiotis and Sfikas, Giorgos and Nikou, Christophoros and Krikoni, O. and Charchanti, Antonia},
  booktitle={IEEE ICIP}, pages={3144--3148}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Download SIPaKMeD from https://www.cs.uoi.gr/~marina/sipakmed.html and put the "
                                    "five folders im_Dyskeratotic, im_Koilocytotic, im_Metaplastic, im_Parabasal, "
                                    "im_Superficial-Intermediate (each with CROPPED/*.bmp) in the manual dir.")

    def read(self, root):
        return sources.load_sipakmed(root)


class Iqothnccd(_MedicalImages):
    """IQ-OTH/NCCD lung CT: benign, malignant, normal."""

    CLASSES = tuple(sources.IQOTHNCCD_FOLDERS)
    DESCRIPTION = "IQ-OTH/NCCD lung cancer CT slices (Alyasriy and Al-Huseiny 2021), 3 classes; 80/10/10 (seed 0)."
    HOMEPAGE = "https://www.kaggle.com/datasets/hamdallak/the-iqothnccd-lung-cancer-dataset"
    LICENSE = "CC BY-SA 4.0"
    CITATION = """@misc{alyasriy2021iqothnccd,
  title={The IQ-OTH/NCCD lung cancer dataset}, author={Alyasriy, Hamdalla and Al-Huseiny, Muayed},
  year={2021}, publisher={Mendeley Data}, doi={10.17632/bhmdr45bh2.1}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Download the dataset from https://www.kaggle.com/datasets/hamdallak/"
                                    "the-iqothnccd-lung-cancer-dataset and put its folders 'Bengin cases', "
                                    "'Malignant cases' and 'Normal cases' in the manual dir.")

    def read(self, root):
        return sources.load_iqothnccd(root)


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
    """A generic class-folder dataset: its name is the task, `classes` its sorted subfolder names."""

    classes: tuple = ()


class ClassFolder(_MedicalImages):
    """Any folder of class subfolders (`root/<class>/**/*.jpg`); one config per dataset (`folder_config`)."""

    BUILDER_CONFIGS = []
    DESCRIPTION = "Images in one subfolder per class, classes sorted by name; 80/10/10 (mail-tf seed 0)."
    LICENSE = "the images' own"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put one subfolder per class (at least 2) of JPEG/PNG/BMP/GIF/WebP images in the manual dir."

    def class_names(self):
        return self.builder_config.classes if self.builder_config else ()   # no config: nothing to build

    def read(self, root):
        return sources.load_folder(root, name=self.builder_config.name)


def folder_config(root, name):
    """The ClassFolder config of the folder at `root` (its classes read from the subfolders)."""
    return FolderConfig(name=name, version=ClassFolder.VERSION, classes=tuple(sources.load_folder(root, name).class_names),
                        description=f"class folders of {root}")


# Reader kind (registry.READERS) -> builder class.
BUILDERS = {"ham10000": Ham10000, "brain_mri": BrainMri, "sipakmed": Sipakmed, "iqothnccd": Iqothnccd,
            "folder": ClassFolder}


def builder_class(kind):
    if kind not in BUILDERS:
        raise DataError(f"tfds:{kind}: no TFDS builder for {kind!r}; builders exist for {', '.join(sorted(BUILDERS))}")
    return BUILDERS[kind]


def prepared_dir(kind, data_dir, name=None):
    """Where TFDS keeps the prepared data of `kind` (a class folder's under its config `name`)."""
    cls = builder_class(kind)
    return Path(data_dir) / cls.name / (name if cls is ClassFolder else "") / str(cls.VERSION)


def builder(kind, data_dir, manual_root=None, name=None):
    """The builder of a reader kind, its prepared data under `data_dir` (the folder kind needs
    `manual_root` or an already prepared `name`)."""
    cls = builder_class(kind)
    if cls is ClassFolder:
        config = folder_config(manual_root, name) if manual_root else _prepared_folder_config(data_dir, name)
        return cls(data_dir=str(data_dir), config=config)
    return cls(data_dir=str(data_dir))


def _prepared_folder_config(data_dir, name):
    path = prepared_dir("folder", data_dir, name)
    if not (path / "dataset_info.json").is_file():
        raise DataError(f"tfds:folder:{name}: not prepared under {str(data_dir)!r} (expected {path}); prepare it "
                        "from the images with mail_tf.data.tfds_builders.prepare('folder', manual_dir=..., name=...)")
    names = tfds.builder_from_directory(str(path)).info.features["label"].names
    return FolderConfig(name=name, version=ClassFolder.VERSION, classes=tuple(names))


def prepare(kind, manual_dir, data_dir, name=None):
    """Build (once) the TFDS data of `kind` from the manual download at `manual_dir`; returns the builder."""
    if not Path(manual_dir).is_dir():
        raise DataError(f"tfds:{kind}: manual dir {str(manual_dir)!r} does not exist; "
                        + BUILDERS[kind].MANUAL_DOWNLOAD_INSTRUCTIONS)
    b = builder(kind, data_dir, manual_root=manual_dir, name=name or Path(manual_dir).name)
    if not b.is_prepared():
        print(f"  preparing TFDS {b.info.full_name} from {manual_dir} into {data_dir} ...", file=sys.stderr, flush=True)
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return b


def tfds_source(b):
    """A prepared builder -> the reader's Source: encoded image bytes as items, in the reader's order,
    pooled as the reader pools them (an official test split stays; the rest is re-split by seed)."""
    rows = []
    for split in SPLITS:
        ds = b.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False)
        for ex in ds.as_numpy_iterator():
            rows.append((int(ex["index"]), split, ex["image"], int(ex["label"]), ex["id"].decode(), ex["group"].decode()))
    rows.sort(key=lambda r: r[0])

    def items(chosen):
        return Items([r[2] for r in chosen], np.asarray([r[3] for r in chosen], np.int64), [r[4] for r in chosen],
                     [r[5] for r in chosen] if b.GROUPED else None)

    if b.OFFICIAL_TEST:     # the reader's "test" (Testing/) sorts before "trainval" (Training/)
        splits = {"test": items([r for r in rows if r[1] == "test"]),
                  "trainval": items([r for r in rows if r[1] != "test"])}
    else:
        splits = {"all": items(rows)}
    return Source(b.name if not isinstance(b, ClassFolder) else b.builder_config.name,
                  list(b.info.features["label"].names), splits)
