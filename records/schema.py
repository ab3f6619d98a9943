"""The one definition of what a record holds and how a records directory is laid out.

Everything that writes or reads the TFRecords (``records.writer``, ``pipeline``,
``trainer``) goes through this module, so the feature keys, dtypes, shard names and
manifest layout live in exactly one place.

Feature keys follow the TF Model Garden / TF Object Detection convention
(``image/encoded``, ``image/class/label`` ...), so standard tooling recognises them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import tensorflow as tf

# Labels follow the Kaggle competition: the submission's ``label`` is P(dog), so dog = 1.
CLASS_NAMES: tuple[str, ...] = ("cat", "dog")

SPLITS: tuple[str, ...] = ("train", "val")

MANIFEST_NAME = "manifest.json"
# Bumped whenever the record or manifest layout changes incompatibly; readers check it.
FORMAT_VERSION = 1

ENCODED = "image/encoded"
FORMAT = "image/format"
LABEL = "image/class/label"
LABEL_TEXT = "image/class/text"
FILENAME = "image/filename"
HEIGHT = "image/height"
WIDTH = "image/width"
# sha256 (hex) of the *original source file's* bytes, not of the stored bytes: it is the
# image's identity, so it stays the same whether or not --max_short_side re-encoded it.
# The train/val split and duplicate detection are both keyed on it.
SHA256 = "image/key/sha256"

FEATURE_SPEC: dict[str, tf.io.FixedLenFeature] = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    LABEL_TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    SHA256: tf.io.FixedLenFeature([], tf.string, default_value=""),
}

_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    *,
    encoded: bytes,
    label: int,
    filename: str,
    height: int,
    width: int,
    sha256: str,
    image_format: str = "jpeg",
) -> tf.train.Example:
    """Builds one ``tf.train.Example`` in this project's schema.

    Args:
      encoded: The stored image bytes (always JPEG in records this project writes).
      label: Class index into ``CLASS_NAMES``.
      filename: The source name, for tracing a record back to its input.
      height: Height in pixels of the *stored* image.
      width: Width in pixels of the *stored* image.
      sha256: Hex sha256 of the original source bytes (the image's identity).
      image_format: Format of ``encoded``.

    Returns:
      The example, ready for ``SerializeToString()``.

    Raises:
      ValueError: If the label is not a valid class index.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not one of 0..{len(CLASS_NAMES) - 1}")
    feature = {
        ENCODED: _bytes(encoded),
        FORMAT: _bytes(image_format.encode()),
        LABEL: _int64(label),
        LABEL_TEXT: _bytes(CLASS_NAMES[label].encode()),
        FILENAME: _bytes(filename.encode()),
        HEIGHT: _int64(height),
        WIDTH: _int64(width),
        SHA256: _bytes(sha256.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example (graph-safe: usable inside ``Dataset.map``)."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``train-00003-of-00016.tfrecord``: the usual TF sharded-file naming."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """Inverse of ``shard_name``; None for any other file name."""
    match = _SHARD_RE.match(os.path.basename(name))
    if not match:
        return None
    return match["split"], int(match["index"]), int(match["total"])


def manifest_path(records_dir: str) -> str:
    return os.path.join(records_dir, MANIFEST_NAME)


def read_manifest(records_dir: str) -> dict[str, Any]:
    """Reads and sanity-checks ``records_dir/manifest.json``.

    Layout (written by ``records.writer``)::

      {"format_version": 1,
       "class_names": ["cat", "dog"],
       "settings": {...the converter settings...},
       "inputs_found": int,
       "splits": {"train": {"num_examples": int,
                            "class_counts": {"cat": int, "dog": int},
                            "shards": [{"file": "train-00000-of-00004.tfrecord",
                                        "num_examples": int,
                                        "sha256": "<hex of the shard file>"}, ...]},
                  "val": {...}},
       "skipped": [{"source": str, "reason": str}, ...],
       "duplicates": [{"sha256": str, "kept": str, "dropped": [str, ...]}, ...]}

    Raises:
      FileNotFoundError: If there is no manifest (with what to run to make one).
      ValueError: If the manifest is unreadable or of another format version.
    """
    path = manifest_path(records_dir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {records_dir!r}: convert images first with "
            f"`make_records --input=<images> --output_dir={records_dir}`"
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); rerun make_records") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}, this code reads {FORMAT_VERSION}; "
            "rerun make_records with this version"
        )
    return manifest


def shard_paths(records_dir: str, split: str, manifest: dict[str, Any] | None = None) -> list[str]:
    """Full paths of the shards of ``split`` listed in the manifest, in order.

    Raises:
      ValueError: If the split is unknown or has no shards.
      FileNotFoundError: If a listed shard is missing on disk.
    """
    manifest = manifest if manifest is not None else read_manifest(records_dir)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ValueError(
            f"split {split!r} not in {manifest_path(records_dir)}; it has {sorted(splits)}"
        )
    files = [os.path.join(records_dir, s["file"]) for s in splits[split]["shards"]]
    if not files:
        raise ValueError(f"no shards for split {split!r} in {manifest_path(records_dir)}")
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) listed in the manifest are missing, e.g. {missing[0]}; "
            "rerun the same make_records command to finish the conversion"
        )
    return files
