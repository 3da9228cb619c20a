"""Multimodal tf.data pipelines (MAIL_SPEC §1).

Training pairs the modalities index-wise: each training set is expanded by the paper's augmentation
(4x, optional) and the smaller ones are enlarged to the largest with augmented copies of randomly
chosen images, so every epoch sees every sample of every modality. Evaluation scores every image
of every task exactly once, its partners in the other modalities drawn deterministically from
their own split.
"""

import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from mail_tf.data import augment
from mail_tf.data.images import check_header, load_images, to_rgb_uint8
from mail_tf.data.sources import DataError
from mail_tf.data.splits import FRACTIONS, concat_items, make_splits, split_indices


class StreamedImages:
    """One split's images left where they are — files, or encoded bytes from TFDS — and decoded,
    converted to RGB and resized in tf.data as they are needed, with the very ops `load_images` uses
    (so the pixels are the in-memory path's). Indexing decodes the chosen images into an array."""

    def __init__(self, files, size):
        self.files = np.asarray(files, dtype=object)
        self.size = size
        self.encoded = bool(len(self.files)) and isinstance(self.files[0], bytes)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        one = np.ndim(index) == 0
        array, _ = load_images(list(np.atleast_1d(self.files[index])), self.size)
        return array[0] if one else array

    def decode(self, item):
        """One file name (or encoded image) tensor -> (size, size, 3) uint8."""
        data = item if self.encoded else tf.io.read_file(item)
        x = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return to_rgb_uint8(x[None], self.size)[0]

    def decode_batch(self, items):
        return tf.map_fn(self.decode, items, fn_output_signature=tf.TensorSpec((self.size, self.size, 3), tf.uint8))


# Decoded size above which `streaming="auto"` leaves the images on disk (the in-memory path holds
# N x S x S x 3 bytes per modality; HAM10000 at 128 px is 0.5 GB).
STREAM_BYTES = int(os.environ.get("MAIL_TF_STREAM_BYTES", 4 << 30))
STREAMING = ("auto", "on", "off")


def use_streaming(streaming, sources, image_size):
    """Whether to stream: "on", "off", or "auto" (decoded file-based data above STREAM_BYTES)."""
    if streaming not in STREAMING:
        raise DataError(f"streaming={streaming!r}: expected one of {STREAMING}")
    if streaming != "auto":
        return streaming == "on"
    files = sum(len(items) for source in sources for items in source.splits.values()
                if not isinstance(items.images, np.ndarray))
    return files * image_size * image_size * 3 > STREAM_BYTES


@dataclasses.dataclass
class Modality:
    """One modality/task: per split the images (a decoded (N, S, S, 3) uint8 array, or
    `StreamedImages` decoded on the fly) and integer labels."""

    task: str
    class_names: list
    images: dict            # {split: (N, S, S, 3) uint8 or StreamedImages}
    labels: dict            # {split: (N,) int64}
    manifest: dict          # {split: [ids]}
    leakage: dict = None    # split_protocol=notebook: test items sharing an image or a group with train

    @property
    def num_classes(self):
        return len(self.class_names)


SPLIT_PROTOCOLS = ("grouped", "notebook")


def prepare_modality(task, source, image_size, seed=0, manifest=None, skip_bad=False, split_protocol="grouped",
                     streaming=False):
    """Split a Source and decode every split to `image_size` (streaming: leave the files where they
    are, their headers checked now, and decode them in tf.data; arrays are always held in memory).

    split_protocol "grouped" (ours): official splits kept, the rest seeded and stratified with whole
    groups (HAM10000 lesions) on one side, or a previous run's manifest. "notebook": the reference
    notebooks' leaky protocol, kept only to measure the leak (`notebook_modality`).
    """
    if split_protocol == "notebook":
        return notebook_modality(task, source, image_size, seed, manifest, skip_bad)
    if split_protocol != "grouped":
        raise DataError(f"split_protocol={split_protocol!r}: expected one of {SPLIT_PROTOCOLS}")
    splits = make_splits(source, seed=seed, manifest=manifest)
    images, labels, ids = {}, {}, {}
    for split, items in splits.items():
        if streaming and not isinstance(items.images, np.ndarray):
            keep = check_headers(items, skip_bad, f"{task}/{split}")
            images[split] = StreamedImages([items.images[i] for i in keep], image_size)
        else:
            images[split], keep = load_images(items.images, image_size, skip_bad=skip_bad, label=f"{task}/{split}",
                                              names=items.ids)
        labels[split] = items.labels[keep]
        ids[split] = [items.ids[i] for i in keep]
    check_split_sizes(task, list(source.class_names), labels)
    return Modality(task, list(source.class_names), images, labels, ids)


def notebook_modality(task, source, image_size, seed=0, manifest=None, skip_bad=False, batch=256):
    """The reference notebooks' protocol: every image of the dataset (official splits pooled) is
    augmented first — the paper's four transforms, so four copies — and the copies are then split at
    image level (stratified 80/10/10, seeded). Copies of one image, and images of one lesion, land on
    both sides of the split; `Modality.leakage` counts how many test items that affects, and a
    warning says so. Training on these splits needs --nopaper_augment (the copies are the augmentation).
    """
    pooled = concat_items([source.splits[k] for k in sorted(source.splits)])
    decoded, keep = load_images(pooled.images, image_size, skip_bad=skip_bad, label=f"{task}/all", names=pooled.ids)
    pooled = pooled.subset(keep)
    copies = []
    for t in range(augment.N_TRANSFORMS):
        for start in range(0, len(decoded), batch):
            x = _scale(decoded[start:start + batch])
            y = augment.paper_transform(x, tf.fill([tf.shape(x)[0]], t))
            copies.append(tf.cast(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), tf.uint8).numpy())
    images = np.concatenate(copies)
    n = len(pooled)
    labels = np.tile(pooled.labels, augment.N_TRANSFORMS)
    source_ids = list(pooled.ids) * augment.N_TRANSFORMS
    ids = [f"{i}#t{t}" for t in range(augment.N_TRANSFORMS) for i in pooled.ids]
    groups = (list(pooled.groups) if pooled.groups is not None else list(pooled.ids)) * augment.N_TRANSFORMS
    parts = dict(zip(("train", "val", "test"), split_indices(labels, None, FRACTIONS, seed)))
    split_ids = {split: [ids[i] for i in index] for split, index in parts.items()}
    if manifest is not None and manifest != split_ids:
        raise DataError(f"{task}: the split manifest is not the notebook protocol's split for seed {seed}")
    train_sources = {source_ids[i] for i in parts["train"]}
    train_groups = {groups[i] for i in parts["train"]}
    test = parts["test"]
    leakage = {"protocol": "notebook", "pooled_images": n, "copies_per_image": augment.N_TRANSFORMS,
               "test_items": int(len(test)),
               "test_items_whose_image_is_in_train": int(sum(source_ids[i] in train_sources for i in test)),
               "test_items_whose_group_is_in_train": int(sum(groups[i] in train_groups for i in test))}
    print(f"  warning: {task}: split_protocol=notebook augments before splitting at image level: "
          f"{leakage['test_items_whose_image_is_in_train']} of {len(test)} test items are copies of a training "
          f"image, {leakage['test_items_whose_group_is_in_train']} share a group (lesion) with one. Test "
          "accuracy on this split is not a held-out estimate.", file=sys.stderr)
    modality = Modality(task, list(source.class_names), {s: images[i] for s, i in parts.items()},
                        {s: labels[i] for s, i in parts.items()}, split_ids, leakage)
    check_split_sizes(task, modality.class_names, modality.labels)
    return modality


def check_headers(items, skip_bad, label):
    """Indices of the items whose file reads as an image of an accepted size (streaming decodes them
    later, inside tf.data, where an error could not name the file); the first bad one raises a
    DataError naming it, or with `skip_bad` every bad one is listed and left out."""
    keep, bad = [], []
    for i, item in enumerate(items.images):
        try:
            check_header(item, f"{label} item {items.ids[i]}" if isinstance(item, bytes) else item)
            keep.append(i)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
    if bad:
        print(f"  {label}: skipped {len(bad)} unreadable image(s):", file=sys.stderr)
        for message in bad:
            print(f"    {message}", file=sys.stderr)
    return np.asarray(keep, np.int64)


def check_split_sizes(task, class_names, labels):
    """Refuse a split without images or a class without training images (after skipped files too);
    name every class missing from validation or test, with its counts."""
    counts = {split: np.bincount(np.asarray(y, np.int64), minlength=len(class_names)) for split, y in labels.items()}
    sizes = ", ".join(f"{split} {int(c.sum())}" for split, c in counts.items())
    for split, c in counts.items():
        if c.sum() == 0:
            raise DataError(f"{task}: the {split} split holds no images ({sizes}); it needs at least one")
    for k, name in enumerate(class_names):
        per_split = ", ".join(f"{split} {int(c[k])}" for split, c in counts.items())
        if counts["train"][k] == 0:
            raise DataError(f"{task}: class {name!r} has no training images ({per_split}); add images or "
                            "remove the class folder")
        absent = [split for split, c in counts.items() if split != "train" and c[k] == 0]
        if absent:
            print(f"  warning: {task}: class {name!r} has no {' or '.join(absent)} images ({per_split}); "
                  f"its {'/'.join(absent)} metrics cannot score it", file=sys.stderr)


def _scale(images):
    return tf.cast(images, tf.float32) / 255.0


def train_index(sizes, paper_augment=True, seed=0):
    """Per modality, (source index, transform id) arrays of the common length N.

    With the paper's augmentation each image appears once per transform (ids 0-3); a modality
    shorter than N is filled with copies of random images under a random non-identity transform.
    Each modality is then shuffled with its own seeded permutation, which fixes the pairing.
    """
    rng = np.random.default_rng(seed)
    copies = augment.N_TRANSFORMS if paper_augment else 1
    n = max(sizes) * copies
    out = []
    for size in sizes:
        src = np.repeat(np.arange(size), copies)
        tid = np.tile(np.arange(copies), size)
        extra = n - len(src)
        if extra:
            src = np.concatenate([src, rng.integers(0, size, extra)])
            tid = np.concatenate([tid, rng.integers(1, augment.N_TRANSFORMS, extra)])
        perm = rng.permutation(n)
        out.append((src[perm], tid[perm]))
    return out


def train_dataset(modalities, batch_size, seed=0, paper_augment=True, random_augment=False, split="train",
                  epoch=None, shuffle_pairs=False):
    """Shuffled batches of ((image_1 .. image_m) in [0, 1], {task: label}) for one pass over the data.

    epoch: None reshuffles on every iteration; an epoch number gives that epoch's fixed order and
    random augmentation, so a resumed run sees exactly the batches an uninterrupted one would.
    shuffle_pairs: draw new partners (and new filler copies) every epoch instead of one pairing for the
    whole run (the reference's). With random partners a task's head cannot learn the other
    modalities' images by heart as stand-ins for its own labels.
    """
    pairing_seed = seed * 1_000_003 + epoch if shuffle_pairs and epoch is not None else seed
    index = train_index([len(m.labels[split]) for m in modalities], paper_augment, pairing_seed)
    n = len(index[0][0])
    images = [_gatherer(m.images[split]) for m in modalities]
    labels = [tf.constant(m.labels[split]) for m in modalities]
    tasks = [m.task for m in modalities]
    ds = tf.data.Dataset.from_tensor_slices(tuple((src, tid) for src, tid in index))
    order_seed = seed if epoch is None else seed * 100_003 + epoch + 1
    ds = ds.shuffle(n, seed=order_seed, reshuffle_each_iteration=epoch is None).batch(batch_size)

    def load(*per_modality):
        xs, ys = [], {}
        for i, (src, tid) in enumerate(per_modality):
            x = _scale(images[i](src))
            x = augment.paper_transform(x, tid)
            xs.append(x)
            ys[tasks[i]] = tf.gather(labels[i], src)
        return tuple(xs), ys      # a tuple: tf.data would pack a list into one tensor

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if random_augment:
        seeds = tf.data.Dataset.random(seed=order_seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (tuple(tf.clip_by_value(augment.random_transform(x, s + i), 0.0, 1.0)
                                    for i, x in enumerate(batch[0])), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _gatherer(images):
    """index tensor -> uint8 batch: a gather from memory, or the streamed files decoded."""
    if isinstance(images, StreamedImages):
        files = tf.constant(list(images.files), tf.string)
        return lambda index: images.decode_batch(tf.gather(files, index))
    array = tf.constant(images)
    return lambda index: tf.gather(array, index)


def eval_partners(modalities, split, seed=0):
    """{task: [index arrays, one per modality]}: every image of the task once, with fixed partners."""
    rng = np.random.default_rng(seed + 1)
    sizes = [len(m.labels[split]) for m in modalities]
    out = {}
    for t, m in enumerate(modalities):
        out[m.task] = [np.arange(sizes[t]) if j == t else rng.integers(0, sizes[j], sizes[t])
                       for j in range(len(modalities))]
    return out


def eval_datasets(modalities, split, batch_size, seed=0, all_labels=False):
    """{task: dataset of ([image_1 .. image_m], {task: label})}, every image of `split` once.

    all_labels: label every task, the partners' too ({task_1: .., task_m: ..}), for losses over all
    heads (attacks on the TMTL loss); the scored task is still the dataset's key.
    """
    out = {}
    for t, (task, index) in enumerate(eval_partners(modalities, split, seed).items()):
        stores = [m.images[split] for m in modalities]
        arrays = tuple(list(s.files[idx]) if isinstance(s, StreamedImages) else s[idx] for s, idx in zip(stores, index))
        if all_labels:
            labels = {m.task: m.labels[split][idx] for m, idx in zip(modalities, index)}
        else:
            labels = {task: modalities[t].labels[split]}
        ds = tf.data.Dataset.from_tensor_slices((arrays, labels)).batch(batch_size)

        def load(xs, y, stores=stores):
            return tuple(_scale(s.decode_batch(x) if isinstance(s, StreamedImages) else x)
                         for s, x in zip(stores, xs)), y

        out[task] = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return out


def manifests(modalities):
    return {m.task: m.manifest for m in modalities}


__all__ = ["STREAMING", "Modality", "StreamedImages", "eval_datasets", "eval_partners", "manifests", "prepare_modality", "train_dataset",
           "train_index", "use_streaming"]
