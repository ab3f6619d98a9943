"""The one definition of what a record holds and how a records directory is laid out.

Everything that writes or reads the TFRecords (``records.writer``, ``pipeline``,
``trainer``) goes through this module, so the feature keys, dtypes, shard names and
manifest layout live in exactly one place.

Feature keys follow the TF Model Garden / TF Object Detection convention
(``image/encoded``, ``image/class/label`` ...), so standard tooling recognises them.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

# Labels follow the Kaggle competition: the submission's ``label`` is P(dog), so dog = 1.
CLASS_NAMES: tuple[str, ...] = ("cat", "dog")

# Every split a records directory may hold, in the order they are listed. test is held
# out: only conversions with --test_fraction > 0 have one (records.plan.splits_of).
SPLITS: tuple[str, ...] = ("train", "val", "test")

MANIFEST_NAME = "manifest.json"
# Bumped whenever the record or manifest layout changes incompatibly; readers check it.
FORMAT_VERSION = 1

ENCODED = "image/encoded"
FORMAT = "image/format"
LABEL = "image/class/label"
LABEL_TEXT = "image/class/text"
# The source's name (``SourceImage.name``) as its original bytes: UTF-8 where the name
# was valid UTF-8, else the file system's bytes exactly (a name is never lost or altered).
FILENAME = "image/filename"
HEIGHT = "image/height"
WIDTH = "image/width"
# sha256 (hex) of the *original source file's* bytes, not of the stored bytes: it is the
# image's identity, so it stays the same whether or not --max_short_side re-encoded it.
# The split (train/val/test) and duplicate detection are both keyed on it.
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
      filename: The source name, for tracing a record back to its input. Stored as the
        name's original bytes: UTF-8 for a valid UTF-8 name; for one that is not (a
        ``str`` with surrogate escapes, as Python gives such file names) the exact bytes
        it has on disk (UTF-8 with ``surrogateescape``, the inverse of Python's decoding),
        so storing never fails and loses nothing.
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
        FILENAME: _bytes(filename.encode("utf-8", "surrogateescape")),
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
