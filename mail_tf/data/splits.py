"""Reproducible splits and the split manifest.

Official splits are kept. Where a dataset has none, a seeded, stratified 80/10/10 split is made
(grouped when items carry groups, e.g. HAM10000 lesions: a whole group lands in one split).
A manifest records which item id is in which split, so a run can be repeated or audited.
"""

import json
from pathlib import Path

import numpy as np

from mail_tf.data.sources import DataError, Items

FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")


def _stratified_assign(labels, fractions, rng):
    """Per class, shuffle and cut by fractions; returns a split index (0, 1, 2) per item."""
    assign = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for s, part in enumerate(np.split(idx, cuts)):
            assign[part] = s
    return assign


def split_indices(labels, groups=None, fractions=FRACTIONS, seed=0):
    """Split index arrays (one per fraction), stratified by label, whole groups kept together.

    For groups, each group is stratified by its first item's label (HAM10000: one diagnosis per lesion).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if groups is None:
        assign = _stratified_assign(labels, fractions, rng)
    else:
        keys, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
        group_assign = _stratified_assign(labels[first], fractions, rng)
        assign = group_assign[inverse]
    return [np.flatnonzero(assign == s) for s in range(len(fractions))]


def make_splits(source, seed=0, manifest=None):
    """{"train", "val", "test"} Items for a Source: official splits, the manifest's, or seeded ones.

    `manifest` is the dict for this dataset from a previous run ({split: [ids]}); with it the split
    is reproduced exactly, and an id missing from the data is an error.
    """
    pool = {k: v for k, v in source.splits.items()}
    if manifest is not None:
        return _from_manifest(source, pool, manifest)
    if set(pool) >= set(SPLITS):
        return {s: pool[s] for s in SPLITS}
    if "trainval" in pool:  # official test split, validation carved from the official training set
        tv = pool["trainval"]
        train, val = split_indices(tv.labels, tv.groups, (8 / 9, 1 / 9), seed)
        return {"train": tv.subset(train), "val": tv.subset(val), "test": pool["test"]}
    items = pool["all"]
    parts = split_indices(items.labels, items.groups, FRACTIONS, seed)
    return {s: items.subset(p) for s, p in zip(SPLITS, parts)}


def _from_manifest(source, pool, manifest):
    everything = {}
    for items in pool.values():
        for i, item_id in enumerate(items.ids):
            everything[item_id] = (items, i)
    out = {}
    for split in SPLITS:
        ids = manifest.get(split)
        if ids is None:
            raise DataError(f"manifest for {source.name!r} has no {split!r} split")
        missing = [i for i in ids if i not in everything]
        if missing:
            raise DataError(f"manifest for {source.name!r}: {len(missing)} {split} item(s) not in the data, "
                            f"e.g. {missing[:3]}")
        chosen = [everything[i] for i in ids]
        parts = [items.subset([k]) for items, k in chosen]
        out[split] = concat_items(parts) if parts else Items([], np.zeros(0, np.int64), [])
    return out


def concat_items(parts):
    if isinstance(parts[0].images, np.ndarray):
        images = np.concatenate([p.images for p in parts])
    else:
        images = [x for p in parts for x in p.images]
    groups = None if parts[0].groups is None else [g for p in parts for g in p.groups]
    return Items(images, np.concatenate([p.labels for p in parts]), [i for p in parts for i in p.ids], groups)


def check_manifest(manifest, tasks, where="manifest"):
    """A split manifest must be {task: {split: [ids]}} for exactly these tasks, each id in one split only."""
    def fail(problem):
        raise DataError(f"{where}: {problem}")

    if not isinstance(manifest, dict):
        fail(f"expected {{task: {{split: [ids]}}}}, got a {type(manifest).__name__}")
    unknown, missing = sorted(set(manifest) - set(tasks)), [t for t in tasks if t not in manifest]
    if unknown or missing:
        fail(f"tasks {sorted(manifest)} do not match the experiment's {list(tasks)}"
             + (f" (unknown: {unknown})" if unknown else "") + (f" (missing: {missing})" if missing else ""))
    for task, splits in manifest.items():
        if not isinstance(splits, dict) or set(splits) != set(SPLITS):
            fail(f"{task}: expected the splits {list(SPLITS)}, each a list of ids, got "
                 f"{sorted(splits) if isinstance(splits, dict) else type(splits).__name__}")
        seen = {}
        for split in SPLITS:
            ids = splits[split]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                fail(f"{task}/{split}: expected a list of item ids (strings)")
            for item in ids:
                if item in seen:
                    fail(f"{task}: item {item!r} is listed in {seen[item]} and in {split}; an item belongs to one split")
                seen[item] = split


def manifest_of(splits):
    return {split: list(items.ids) for split, items in splits.items()}


def write_manifest(path, manifests):
    """Write {dataset: {split: [ids]}} as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(manifests, f, indent=1)


def read_manifest(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"split manifest {str(path)!r} could not be read: {e}") from None
