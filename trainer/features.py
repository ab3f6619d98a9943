"""A frozen base's feature vector for every record of a records directory, cached on disk.

Each record goes once through the evaluation decode (``pipeline.dataset.eval_dataset``),
the backbone's own preprocessing layer, the pretrained base and global average pooling:
one float vector per image, which a cheap head (``trainer.audit``) can then be trained on
many times over, in seconds, instead of running the base again.

Each image's name (``image/filename``), label and sha256 key are read from the same shard
in the same order as its pixels: the eval pipeline interleaves shards, so it is run one
shard at a time (a single file is read in file order), and the labels the pipeline yields
are checked against the ones read with the names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from pipeline import dataset as dataset_lib
from records import schema, sources
from records.manifest import Manifest
from records.workers import Progress
from trainer import backbones
from trainer import model as model_lib

# The record fields read next to the pixels, to name each feature vector.
_NAME_KEYS = (schema.FILENAME, schema.LABEL, schema.SHA256)


@dataclasses.dataclass(frozen=True)
class Features:
    """One row per labelled record, in (split, shard, position in shard) order.

    Attributes:
      vectors: float32 [N, D] pooled base outputs.
      labels: int64 [N] given labels (indices into the manifest's class names).
      filenames: Each record's ``image/filename``, non-UTF-8 bytes escaped (``\\xff``).
      splits: Each record's split.
      keys: Each record's sha256 key (the source file's identity).
      shards: Each record's shard file name.
      positions: Each record's position in its shard (0-based).
    """

    vectors: np.ndarray
    labels: np.ndarray
    filenames: tuple[str, ...]
    splits: tuple[str, ...]
    keys: tuple[str, ...]
    shards: tuple[str, ...]
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def feature_model(backbone: str, weights: str | None, image_size: tuple[int, int]) -> keras.Model:
    """Raw RGB 0..255 [B, H, W, 3] -> the base's globally average-pooled features [B, D].

    Raises:
      trainer.model.WeightsError: The weights cannot be obtained.
      ValueError: Unknown backbone.
    """
    spec = backbones.get(backbone)
    # freeze_layers=0 only because a random-weight base must not be frozen with a warning:
    # nothing here trains, and the model runs in inference mode (predict_on_batch).
    base = model_lib.build_base(
        model_lib.ModelConfig(
            backbone=backbone, weights=weights, image_size=image_size, freeze_layers=0
        )
    )
    inputs = keras.Input(shape=(*image_size, 3), name="image")
    x = spec.preprocess(f"{backbone}_preprocess")(inputs)
    x = base(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_features")


def _shard_manifest(manifest: Manifest, split: str, shard) -> Manifest:
    """``manifest`` narrowed to one shard of ``split``, for a read in file order."""
    one = dataclasses.replace(
        manifest.split(split), shards=(shard,), num_examples=shard.num_examples
    )
    return dataclasses.replace(manifest, splits={split: one})


def _read_names(path: str) -> tuple[list[str], list[int], list[str]]:
    """(escaped file names, labels, sha256 keys) of one shard, in file order."""
    spec = {key: schema.FEATURE_SPEC[key] for key in _NAME_KEYS}
    names, labels, keys = [], [], []
    for batch in (
        tf.data.TFRecordDataset(path)
        .batch(1024)
        .map(lambda serialized: tf.io.parse_example(serialized, spec))
        .as_numpy_iterator()
    ):
        # Stored as the name's original bytes; shown escaped, as the manifest shows them.
        names.extend(
            sources.display_name(n.decode("utf-8", "surrogateescape"))
            for n in batch[schema.FILENAME]
        )
        labels.extend(int(label) for label in batch[schema.LABEL])
        keys.extend(key.decode() for key in batch[schema.SHA256])
    return names, labels, keys


def extract(
    manifest: Manifest,
    model: keras.Model,
    batch_size: int = 64,
    splits: tuple[str, ...] = schema.SPLITS,
    progress: bool | None = None,
) -> Features:
    """Runs every record of ``splits`` once through ``model`` (see ``feature_model``).

    Args:
      manifest: The records directory.
      model: Raw RGB images -> feature vectors; its input size is the decode size.
      batch_size: Images per forward pass.
      splits: The splits to read; those the manifest lacks or that have no shards are left
        out.
      progress: A progress bar (None: only on a terminal, else a log line every 10 s).

    Raises:
      ValueError: No split has records, or a shard's names and pixels disagree.
      FileNotFoundError: A shard listed in the manifest is missing.
    """
    image_size = tuple(model.input_shape[1:3])
    present = [s for s in splits if s in manifest.splits and manifest.splits[s].shards]
    if not present:
        raise ValueError(f"{manifest.path} lists no records in {', '.join(splits)}")
    total = sum(manifest.num_examples(s) for s in present)
    bar = Progress(f"features ({model.name})", total, progress)
    vectors, labels, names, split_of, keys, shard_of, positions = [], [], [], [], [], [], []
    try:
        for split in present:
            for shard in manifest.split(split).shards:
                shard_names, shard_labels, shard_keys = _read_names(shard.path)
                data = dataset_lib.eval_dataset(
                    _shard_manifest(manifest, split, shard),
                    batch_size,
                    split=split,
                    image_size=image_size,
                )
                pipeline_labels = []
                for images, batch_labels in data:
                    vectors.append(np.asarray(model.predict_on_batch(images), np.float32))
                    pipeline_labels.extend(batch_labels.numpy().tolist())
                    bar.update(len(batch_labels))
                if pipeline_labels != shard_labels:
                    # Would mean the pixels and the names came out in different orders.
                    raise ValueError(
                        f"{shard.path}: the eval pipeline's {len(pipeline_labels)} labels do not "
                        f"match the {len(shard_labels)} read with the file names; rerun "
                        "verify_records on the directory"
                    )
                labels.extend(shard_labels)
                names.extend(shard_names)
                keys.extend(shard_keys)
                split_of.extend([split] * len(shard_labels))
                shard_of.extend([shard.file] * len(shard_labels))
                positions.extend(range(len(shard_labels)))
    finally:
        bar.close()
    return Features(
        vectors=np.concatenate(vectors),
        labels=np.asarray(labels, np.int64),
        filenames=tuple(names),
        splits=tuple(split_of),
        keys=tuple(keys),
        shards=tuple(shard_of),
        positions=np.asarray(positions, np.int64),
    )


def fingerprint(
    manifest: Manifest, backbone: str, weights: str, image_size: tuple[int, int]
) -> str:
    """What a cached feature file was made from: the shards' hashes and the base.

    A weights *file* is identified by its path, size and modification time.
    """
    shards = {
        split: [(s.file, s.num_examples, s.sha256) for s in info.shards]
        for split, info in sorted(manifest.splits.items())
    }
    weights_id = weights
    if os.path.isfile(weights):
        stat = os.stat(weights)
        weights_id = f"{os.path.abspath(weights)}:{stat.st_size}:{stat.st_mtime_ns}"
    text = json.dumps([shards, backbone, weights_id, list(image_size)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save(features: Features, path: str, key: str) -> None:
    """Writes ``features`` to ``path`` (.npz), tagged with ``key`` (``fingerprint``)."""
    tmp = path + ".tmp.npz"
    np.savez(
        tmp,
        key=key,
        **{
            field.name: np.asarray(getattr(features, field.name))
            for field in dataclasses.fields(Features)
        },
    )
    # Renamed only when complete: a killed run never leaves a half cache that loads.
    os.replace(tmp, path)


def load(path: str, key: str) -> Features | None:
    """The features cached in ``path`` if it was made with ``key``; else None."""
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            logging.info("%s was made from other records or another base; recomputing", path)
            return None
        return Features(
            vectors=data["vectors"],
            labels=data["labels"],
            filenames=tuple(str(s) for s in data["filenames"]),
            splits=tuple(str(s) for s in data["splits"]),
            keys=tuple(str(s) for s in data["keys"]),
            shards=tuple(str(s) for s in data["shards"]),
            positions=data["positions"],
        )
