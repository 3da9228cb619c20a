"""Medical datasets as multimodal tf.data pipelines: readers, splits, augmentation, pairing."""

import sys

from mail_tf.data.pipeline import (SPLIT_PROTOCOLS, STREAMING, Modality, StreamedImages, eval_datasets, eval_partners,
                                   manifests, prepare_modality, train_dataset, train_index, use_streaming)
from mail_tf.data.registry import EXPERIMENTS, DatasetSpec, parse_spec, resolve_experiment
from mail_tf.data.sources import DataError, Items, Source
from mail_tf.data.splits import check_manifest, read_manifest, write_manifest


def load_experiment(name, image_size=128, seed=0, data_dir=None, manifest=None, skip_bad=False,
                    manifest_name="split manifest", split_protocol="grouped", streaming="auto"):
    """Load every modality of a named experiment (or spec string) as `Modality` objects.

    manifest: {task: {split: [ids]}} from a previous run's split manifest, to reuse its splits; checked
    against the experiment's tasks (errors name it as `manifest_name`).
    streaming: "off" decodes every image into memory once; "on" leaves image files where they are and
    decodes them in tf.data; "auto" streams when the decoded files would exceed MAIL_TF_STREAM_BYTES
    (4 GiB). The pixels are the same either way.
    """
    specs = resolve_experiment(name)
    if manifest is not None:
        check_manifest(manifest, [spec.task for spec in specs], manifest_name)
    sources = [spec.load(data_dir) for spec in specs]
    stream = use_streaming(streaming, sources, image_size) and split_protocol == "grouped"
    if stream:
        print(f"  streaming the images from their files ({streaming})", file=sys.stderr)
    return [prepare_modality(spec.task, source, image_size, seed=seed, manifest=(manifest or {}).get(spec.task),
                             skip_bad=skip_bad, split_protocol=split_protocol, streaming=stream)
            for spec, source in zip(specs, sources)]


__all__ = ["SPLIT_PROTOCOLS", "STREAMING", "DataError", "StreamedImages", "use_streaming", "DatasetSpec", "EXPERIMENTS", "Items", "Modality", "Source", "eval_datasets",
           "check_manifest", "eval_partners", "load_experiment", "manifests", "parse_spec", "prepare_modality", "read_manifest",
           "resolve_experiment", "train_dataset", "train_index", "write_manifest"]
