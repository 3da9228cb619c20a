"""Named experiments: `DATASET=name` -> the datasets of each modality, their roots and settings.

Roots of downloaded datasets live below a data directory (`--data_dir`, else $MAIL_TF_DATA_DIR,
else ./data), one folder per dataset: ham10000/, brain_tumor_mri/, sipakmed/, iqothnccd/.
The embedded default (`medmnist`) reads the npz files shipped in datasets/medmnist/.

Any pairing works without code through a spec string: `KIND[:OPTION]=ROOT` per modality, joined
by commas, e.g. `medmnist:bloodmnist=/data/mnist,ham10000=/data/HAM10000,folder=/data/my_xrays`.
`tfds:KIND` reads the prepared TFDS data of a builder (`tfds_builders.py`), with the same splits.
"""

import dataclasses
import importlib.resources
import os
from pathlib import Path

from mail_tf.data import sources
from mail_tf.data.sources import DataError

# datasets/medmnist in this repository, installed as mail_tf.embedded's package data (setup.cfg).
EMBEDDED_DIR = Path(importlib.resources.files("mail_tf.embedded")) / "medmnist"

READERS = {
    "medmnist": lambda root, option: sources.load_medmnist(root, option),
    "sipakmed": lambda root, option: sources.load_sipakmed(root),
    "ham10000": lambda root, option: sources.load_ham10000(root),
    "brain_mri": lambda root, option: sources.load_brain_mri(root),
    "iqothnccd": lambda root, option: sources.load_iqothnccd(root),
    "folder": lambda root, option: sources.load_folder(root, name=option or Path(root).name),
}
# Every kind a spec may name: the readers, and tfds (prepared TFDS data, read by `load_tfds`).
KINDS = (*READERS, "tfds")
DEFAULT_FOLDERS = {"sipakmed": "sipakmed", "ham10000": "ham10000", "brain_mri": "brain_tumor_mri",
                   "iqothnccd": "iqothnccd"}
# Where each dataset comes from and what its folder must look like: the message for a missing root.
OBTAIN = {
    "sipakmed": "SIPaKMeD (https://www.cs.uoi.gr/~marina/sipakmed.html): five folders im_Dyskeratotic, "
                "im_Koilocytotic, im_Metaplastic, im_Parabasal, im_Superficial-Intermediate, each with CROPPED/*.bmp",
    "ham10000": "HAM10000 (https://doi.org/10.7910/DVN/DBW86T): HAM10000_metadata.csv and the ISIC_*.jpg images "
                "anywhere below it (e.g. HAM10000_images_part_1/, _part_2/)",
    "brain_mri": "the Nickparvar brain tumour MRI set (https://www.kaggle.com/datasets/masoudnickparvar/"
                 "brain-tumor-mri-dataset): Training/<class>/*.jpg and Testing/<class>/*.jpg for glioma, "
                 "meningioma, notumor, pituitary",
    "iqothnccd": "IQ-OTH/NCCD lung CT (https://www.kaggle.com/datasets/hamdallak/the-iqothnccd-lung-cancer-dataset): "
                 "folders 'Bengin cases', 'Malignant cases', 'Normal cases'",
    "folder": "your own images: one subfolder per class (at least 2) holding JPEG, PNG, BMP, GIF or WebP files",
}
TFDS_FOLDER = "tfds"    # prepared TFDS data below the data directory, unless a spec names another


def load_tfds(option, root, data_dir=None):
    """`tfds:KIND` (KIND a dataset kind; `folder:NAME` for a class folder): the TFDS data prepared
    under `root`, prepared first from the dataset's usual folder below the data directory if absent."""
    from mail_tf.data import tfds_builders

    kind, _, name = option.partition(":")
    prepared = tfds_builders.prepared_dir(kind, root, name)       # DataError for a kind without a builder
    if kind == "folder" and not name:
        raise DataError(f"tfds:{option}: a class folder needs its name, e.g. tfds:folder:xray")
    manual = Path(data_dir or default_data_dir()) / DEFAULT_FOLDERS.get(kind, name)
    if (prepared / "dataset_info.json").is_file():
        builder = tfds_builders.builder(kind, root, name=name or None)
    elif manual.is_dir():
        builder = tfds_builders.prepare(kind, manual, root, name=name or None)
    else:
        raise DataError(f"tfds:{option}: no prepared TFDS data under {str(root)!r} and no download at "
                        f"{str(manual)!r} to prepare it from. Get {OBTAIN[kind]}; put it at {manual} "
                        "(--data_dir) or prepare it with mail_tf.data.tfds_builders.prepare")
    return tfds_builders.tfds_source(builder)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    kind: str                 # one of KINDS
    option: str = None        # medmnist flag, or the task name of a generic folder
    root: str = None          # None: the default below the data directory

    @property
    def task(self):
        if self.kind == "tfds":         # the task of the dataset it holds: tfds:ham10000 is ham10000
            kind, _, name = (self.option or "").partition(":")
            return name or kind
        return self.option if self.kind in ("medmnist", "folder") and self.option else self.kind

    def resolve_root(self, data_dir):
        if self.root:
            return self.root
        if self.kind == "medmnist":
            return str(EMBEDDED_DIR)
        if self.kind == "tfds":
            return str(Path(data_dir) / TFDS_FOLDER)
        return str(Path(data_dir) / DEFAULT_FOLDERS.get(self.kind, self.kind))

    def load(self, data_dir=None):
        root = self.resolve_root(data_dir or default_data_dir())
        if self.kind == "tfds":
            return load_tfds(self.option, root, data_dir)
        if self.kind != "medmnist" and not Path(root).is_dir():
            where = (f"the {self.kind}= path of the dataset spec" if self.root else
                     f"--data_dir DIR (holding {DEFAULT_FOLDERS[self.kind]}/), $MAIL_TF_DATA_DIR, or a spec "
                     f"{self.kind}=PATH")
            raise DataError(f"{self.kind}: data root {root!r} does not exist. Get {OBTAIN[self.kind]}; point "
                            f"at it with {where}")
        return READERS[self.kind](root, self.option)


EXPERIMENTS = {
    "medmnist": (DatasetSpec("medmnist", "breastmnist"), DatasetSpec("medmnist", "pneumoniamnist")),
    "sipakmed": (DatasetSpec("sipakmed"), DatasetSpec("ham10000")),
    "ham10000_brainmri": (DatasetSpec("ham10000"), DatasetSpec("brain_mri")),
    "brainmri_ct": (DatasetSpec("brain_mri"), DatasetSpec("iqothnccd")),
}


def default_data_dir():
    return os.environ.get("MAIL_TF_DATA_DIR", "data")


def parse_spec(text):
    """`KIND[:OPTION]=ROOT,...` -> DatasetSpecs."""
    specs = []
    for part in text.split(","):
        if not part.strip():
            raise DataError(f"dataset spec {text!r}: an empty entry (a trailing or doubled comma?); expected "
                            "KIND[:OPTION]=ROOT entries joined by single commas")
        head, sep, root = part.partition("=")
        kind, _, option = head.strip().partition(":")
        if kind not in KINDS or (kind in ("medmnist", "tfds") and not option):
            raise DataError(f"dataset spec {part!r}: expected KIND[:OPTION]=ROOT with KIND one of "
                            f"{sorted(KINDS)} (medmnist needs its flag, e.g. medmnist:bloodmnist=DIR; tfds "
                            "the dataset, e.g. tfds:ham10000)")
        root = root.strip() if sep else ""
        if kind == "folder" and not root:      # no default folder to fall back on
            raise DataError(f"dataset spec {part!r}: a folder needs its path, e.g. folder:xray=/data/xrays")
        specs.append(DatasetSpec(kind, option or None, root or None))
    return specs


def resolve_experiment(name):
    """A named experiment or a spec string -> tuple of DatasetSpecs (one per modality)."""
    if name in EXPERIMENTS:
        specs = EXPERIMENTS[name]
    elif "=" in name or ":" in name:
        specs = tuple(parse_spec(name))
    else:
        raise DataError(f"unknown experiment {name!r}; named experiments are {', '.join(sorted(EXPERIMENTS))}, "
                        f"or pair datasets with KIND[:OPTION]=ROOT,... (kinds: {', '.join(sorted(KINDS))})")
    tasks = [s.task for s in specs]
    if len(set(tasks)) != len(tasks):
        raise DataError(f"experiment {name!r}: task names must differ, got {tasks}")
    return specs
