"""Which images a benchmark times: the split's records, subsets of them, the original files.

Every variant must time the same images. The records of a split name their images
(``image/filename``) and identify them (``image/key/sha256``, the source file's hash,
the same whether or not ``--max_short_side`` re-encoded the image), so:

* ``read_split`` lists (key, filename, label) of a split's records;
* ``check_same_images`` fails when two records directories hold different images;
* ``choose_subset`` picks a seeded random subset (``--max_images``, ``--slow_max_images``);
* ``trimmed_records`` writes only a subset's records, so the record-reading variants time
  exactly that subset too;
* ``locate_files`` finds the original JPEGs for the file-based baselines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
from collections.abc import Sequence

import tensorflow as tf

from records import schema
from records.manifest import Manifest

_KEYS = (schema.SHA256, schema.FILENAME, schema.LABEL)


@dataclasses.dataclass(frozen=True)
class SplitImage:
    """One image of a split: its identity, its name in the records, its label."""

    key: str
    filename: str
    label: int


def read_split(manifest: Manifest, split: str) -> list[SplitImage]:
    """Every image of ``split``, in shard order, from the records themselves.

    Raises:
      ValueError, FileNotFoundError: The split has no shards, or one is missing.
    """
    paths = manifest.split(split).paths
    spec = {key: schema.FEATURE_SPEC[key] for key in _KEYS}
    parsed = (
        tf.data.TFRecordDataset(paths)
        .batch(1024)
        .map(lambda serialized: tf.io.parse_example(serialized, spec))
    )
    return [
        SplitImage(key.decode(), filename.decode(), int(label))
        for batch in parsed.as_numpy_iterator()
        for key, filename, label in zip(
            batch[schema.SHA256], batch[schema.FILENAME], batch[schema.LABEL]
        )
    ]


def check_same_images(
    images: Sequence[SplitImage], other: Sequence[SplitImage], where: str, other_where: str
) -> None:
    """Raises ValueError unless both lists hold the same images (by sha256 key).

    The 160-px records are benchmarked against the full-resolution ones and the original
    files; the ratios mean nothing if they hold different images.
    """
    keys = {image.key: image for image in images}
    other_keys = {image.key: image for image in other}
    only_here = sorted(set(keys) - set(other_keys))
    only_there = sorted(set(other_keys) - set(keys))
    if only_here or only_there:
        example = keys[only_here[0]] if only_here else other_keys[only_there[0]]
        raise ValueError(
            f"{where} and {other_where} do not hold the same images: {len(only_here)} only in "
            f"the first, {len(only_there)} only in the second (e.g. {example.filename}); make "
            "both with make_records from the same --input and --val_fraction"
        )


def choose_subset(images: Sequence[SplitImage], count: int | None, seed: int) -> list[SplitImage]:
    """A seeded random subset of ``count`` images (all of them when count is None or more).

    Sampled from the images sorted by key, so the subset depends only on which images
    there are and the seed, not on the shard order of a particular records directory.
    """
    ordered = sorted(images, key=lambda image: image.key)
    if count is None or count >= len(ordered):
        return ordered
    return random.Random(seed).sample(ordered, count)


def trimmed_records(
    manifest: Manifest, split: str, keys: set[str], output_dir: str | os.PathLike
) -> Manifest:
    """Writes the records of ``split`` whose sha256 key is in ``keys`` to ``output_dir``.

    As many shards as the original (so the interleaved read is as parallel), the records
    copied byte for byte, and a manifest listing only that split, with the original's
    settings (``max_short_side`` chooses the decode path).

    Returns:
      The new directory's manifest.
    """
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = manifest.split(split)
    key_spec = {schema.SHA256: schema.FEATURE_SPEC[schema.SHA256]}
    label_spec = {schema.LABEL: schema.FEATURE_SPEC[schema.LABEL]}
    num_shards = len(source.shards)
    shards = []
    class_counts = dict.fromkeys(manifest.class_names, 0)
    writers = [
        tf.io.TFRecordWriter(str(output_dir / schema.shard_name(split, i, num_shards)))
        for i in range(num_shards)
    ]
    counts = [0] * num_shards
    try:
        for index, shard in enumerate(source.shards):
            chunks = tf.data.TFRecordDataset(shard.path).batch(256)
            for chunk in chunks.as_numpy_iterator():
                features = tf.io.parse_example(chunk, {**key_spec, **label_spec})
                for serialized, key, label in zip(
                    chunk, features[schema.SHA256].numpy(), features[schema.LABEL].numpy()
                ):
                    if key.decode() in keys:
                        writers[index].write(serialized)
                        counts[index] += 1
                        class_counts[manifest.class_names[int(label)]] += 1
    finally:
        for writer in writers:
            writer.close()
    for index in range(num_shards):
        shards.append(
            {
                "file": schema.shard_name(split, index, num_shards),
                "num_examples": counts[index],
                "sha256": None,
            }
        )
    data = {
        **manifest.data,
        "splits": {
            split: {"num_examples": sum(counts), "class_counts": class_counts, "shards": shards}
        },
    }
    (output_dir / schema.MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return Manifest.load(str(output_dir))


def locate_files(
    images: Sequence[SplitImage], images_dir: str, records_dir: str
) -> list[pathlib.Path]:
    """The original file of each image in ``images_dir``.

    Records name files relative to the converted folder's parent ("train/cat.1.jpg") or
    by base name; either is accepted.

    Raises:
      FileNotFoundError: Some are not there (naming one and what to pass instead).
    """
    root = pathlib.Path(images_dir)

    def locate(name: str) -> pathlib.Path:
        path = root / name
        return path if path.is_file() else root / pathlib.PurePath(name).name

    paths = [locate(image.filename) for image in images]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) named in {records_dir} are not in {images_dir}, e.g. "
            f"{missing[0]}; pass the folder the records were made from"
        )
    return paths


def class_folder_tree(
    paths: Sequence[pathlib.Path], labels: Sequence[int], root: pathlib.Path
) -> pathlib.Path:
    """Symlinks ``root/<class>/<file>`` to the flat Kaggle folder (it has no class folders)."""
    for path, label in zip(paths, labels):
        folder = root / schema.CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())
    return root
