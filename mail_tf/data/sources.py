"""Readers for the layouts users download medical datasets in.

Each reader returns a `Source`: the class names and, per split, the items (file paths or rows of an
in-memory array) with integer labels and stable ids for the split manifest. Official splits are
kept where a dataset has them; `splits.py` makes the rest.
"""

import csv
import dataclasses
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

import numpy as np

# What tf.io.decode_image reads. TIFF is not among them: such files are counted and reported, never
# taken as images that then fail to decode (or, with --skip_bad_images, silently empty a class).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
UNREADABLE_EXTENSIONS = (".tif", ".tiff", ".dcm", ".nii", ".gz")


class DataError(ValueError):
    """Bad input data: the message names the file or folder and what was expected."""


@dataclasses.dataclass
class Items:
    """One split of one dataset: file paths (str) or an image array, labels, and manifest ids."""

    images: object          # list[str] of paths, or np.ndarray (N, H, W[, C]) uint8
    labels: np.ndarray      # (N,) int
    ids: list               # (N,) str, stable across runs (relative path or "split:row")
    groups: list = None     # optional (N,) group keys that must not straddle splits (HAM10000 lesions)

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        index = np.asarray(index, dtype=np.int64)
        pick = lambda seq: [seq[i] for i in index] if seq is not None else None  # noqa: E731
        images = self.images[index] if isinstance(self.images, np.ndarray) else pick(self.images)
        return Items(images, self.labels[index], pick(self.ids), pick(self.groups))


@dataclasses.dataclass
class Source:
    name: str
    class_names: list
    splits: dict            # {"train"|"val"|"test"|"all": Items}; "all" means: split me


def _require_dir(path, what):
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what}: data root {str(path)!r} does not exist or is not a directory")
    return path


def is_system_name(name):
    """Hidden files and folders, and the archive debris of macOS (`__MACOSX`, `._x.jpg`)."""
    return name.startswith(".") or name.startswith("__")


def _images_in(folder):
    """Image files below `folder`, symlinked subfolders followed (each real folder once: no cycles),
    hidden and system entries skipped. Files of formats TensorFlow cannot decode are reported."""
    found, unreadable, seen = [], [], set()
    for where, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(where)
        if real in seen:            # a symlink back up the tree, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not is_system_name(d))
        for name in files:
            suffix = Path(name).suffix.lower()
            if is_system_name(name):
                continue
            if suffix in IMAGE_EXTENSIONS:
                found.append(Path(where) / name)
            elif suffix in UNREADABLE_EXTENSIONS:
                unreadable.append(Path(where) / name)
    if unreadable:
        kinds = sorted({p.suffix.lower() for p in unreadable})
        print(f"  {folder}: ignored {len(unreadable)} file(s) of a format TensorFlow cannot decode "
              f"({', '.join(kinds)}), e.g. {unreadable[0]}; convert them to PNG to use them", file=sys.stderr)
    return sorted(found)


def _class_folder_items(root, class_dirs, class_names, subdir=None):
    """Items from one folder per class; every class folder must hold at least one image."""
    wheres = [Path(folder) / subdir if subdir else Path(folder) for folder in class_dirs]
    missing = [str(w) for w in wheres if not w.is_dir()]
    if missing:
        raise DataError(f"expected one folder per class {list(class_names)}; missing {missing}")
    paths, labels = [], []
    for label, where in enumerate(wheres):
        found = _images_in(where)
        if not found:
            raise DataError(f"class folder {str(where)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += [str(p) for p in found]
        labels += [label] * len(found)
    ids = [os.path.relpath(p, root) for p in paths]
    return Items(paths, np.asarray(labels, np.int64), ids)


def load_folder(root, name="folder"):
    """Any folder of class subfolders (`root/<class>/**/*.jpg`), class names sorted alphabetically."""
    root = _require_dir(root, name)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not is_system_name(d.name))
    if len(classes) < 2:
        raise DataError(f"{name}: {str(root)!r} must hold one subfolder per class (at least 2), found {classes}")
    items = _class_folder_items(root, [root / c for c in classes], classes)
    return Source(name, classes, {"all": items})


SIPAKMED_CLASSES = ("Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate")


def load_sipakmed(root):
    """SIPaKMeD official layout: `im_<Class>/CROPPED/*.bmp` (the cropped single cells)."""
    root = _require_dir(root, "sipakmed")
    dirs = [root / f"im_{c}" for c in SIPAKMED_CLASSES]
    return Source("sipakmed", list(SIPAKMED_CLASSES), {"all": _class_folder_items(root, dirs, SIPAKMED_CLASSES,
                                                                                  subdir="CROPPED")})


IQOTHNCCD_FOLDERS = {"benign": "Bengin cases", "malignant": "Malignant cases", "normal": "Normal cases"}


def load_iqothnccd(root):
    """IQ-OTH/NCCD lung CT: the official folders `Bengin cases`, `Malignant cases`, `Normal cases`."""
    root = _require_dir(root, "iqothnccd")
    dirs = [root / f for f in IQOTHNCCD_FOLDERS.values()]
    return Source("iqothnccd", list(IQOTHNCCD_FOLDERS), {"all": _class_folder_items(root, dirs, list(IQOTHNCCD_FOLDERS))})


BRAIN_MRI_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def load_brain_mri(root):
    """Nickparvar brain-tumour MRI: official `Training/<class>` and `Testing/<class>` folders."""
    root = _require_dir(root, "brain_mri")
    splits = {}
    for split, folder in (("trainval", "Training"), ("test", "Testing")):
        splits[split] = _class_folder_items(root, [root / folder / c for c in BRAIN_MRI_CLASSES],
                                            BRAIN_MRI_CLASSES)
    return Source("brain_mri", list(BRAIN_MRI_CLASSES), splits)


HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_COLUMNS = ("lesion_id", "image_id", "dx")


def load_ham10000(root):
    """HAM10000: `HAM10000_metadata.csv` and `<image_id>.jpg` anywhere below the root (the official
    two-folder release included). Lesion ids become split groups, so no lesion straddles two splits."""
    root = _require_dir(root, "ham10000")
    meta = root / "HAM10000_metadata.csv"
    if not meta.is_file():
        raise DataError(f"ham10000: expected the metadata file {str(meta)!r}")
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in HAM10000_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{meta}: missing column(s) {missing}; found {reader.fieldnames}")
        rows = list(reader)
    files = {p.stem: p for p in _images_in(root)}
    paths, labels, ids, groups = [], [], [], []
    for line, row in enumerate(rows, start=2):
        if row["dx"] not in HAM10000_CLASSES:
            raise DataError(f"{meta}, line {line}: unknown dx {row['dx']!r}; expected one of {HAM10000_CLASSES}")
        path = files.get(row["image_id"])
        if path is None:
            raise DataError(f"{meta}, line {line}: no image file {row['image_id']}.jpg below {str(root)!r}")
        paths.append(str(path))
        labels.append(HAM10000_CLASSES.index(row["dx"]))
        ids.append(os.path.relpath(path, root))
        groups.append(row["lesion_id"])
    return Source("ham10000", list(HAM10000_CLASSES),
                  {"all": Items(paths, np.asarray(labels, np.int64), ids, groups)})


def _medmnist_info(flag):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # medmnist prints a torch warning on import
        from medmnist.info import INFO
    if flag not in INFO:
        raise DataError(f"unknown MedMNIST flag {flag!r}; 2D flags are "
                        f"{sorted(k for k, v in INFO.items() if not k.endswith('3d'))}")
    return INFO[flag]


def md5sum(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_medmnist(root, flag, size=None, download=True):
    """MedMNIST 2D `{flag}.npz` (28x28) or `{flag}_{size}.npz`, MD5-checked, with the official splits."""
    info = _medmnist_info(flag)
    suffix = "" if size in (None, 28) else f"_{size}"
    url, md5 = info[f"url{suffix}"], info[f"MD5{suffix}"]
    path = Path(root) / f"{flag}{suffix}.npz"
    if not path.is_file():
        if not Path(root).is_dir():      # a misspelt root: say so, create nothing
            raise DataError(f"MedMNIST root {str(root)!r} does not exist; expected a folder holding {path.name} "
                            f"(or an existing folder to download it into from {url})")
        if download:
            try:
                urllib.request.urlretrieve(url, path)
            except OSError as e:
                path.unlink(missing_ok=True)
                raise DataError(f"MedMNIST file {path.name} is not in {str(root)!r} and could not be "
                                f"downloaded ({e.__class__.__name__}: {e}). Download it from {url} and put "
                                f"it in {str(root)!r}.") from None
        else:
            raise DataError(f"MedMNIST file {path.name} is not in {str(root)!r}. Download it from {url} and "
                            f"put it in {str(root)!r}.")
    actual = md5sum(path)
    if actual != md5:
        raise DataError(f"{path}: MD5 {actual} does not match the official {md5} (medmnist metadata); "
                        f"the file is corrupt or not {flag}{suffix}. Download it again from {url}.")
    try:
        data = np.load(path)
        keys = set(data.files)
    except Exception as e:  # noqa: BLE001 - any unreadable npz gets the same clear message
        raise DataError(f"{path}: not a readable npz file ({e})") from None
    expected = {f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")}
    if not expected <= keys:
        raise DataError(f"{path}: missing arrays {sorted(expected - keys)}; a MedMNIST npz holds {sorted(expected)}")
    if info["task"] not in ("binary-class", "multi-class", "ordinal-regression"):
        raise DataError(f"MedMNIST {flag} is a {info['task']} task; only single-label classification is supported")
    classes = [info["label"][str(i)] for i in range(len(info["label"]))]
    splits = {}
    for split in ("train", "val", "test"):
        images = data[f"{split}_images"]
        labels = data[f"{split}_labels"].reshape(-1).astype(np.int64)
        splits[split] = Items(images, labels, [f"{split}:{i}" for i in range(len(labels))])
    return Source(flag, classes, splits)
