"""``manifest.json`` as a typed object: read once per command, then passed down.

``records.writer`` writes the manifest; everything that reads a records directory
(the pipeline, the trainer, ``verify_records``, the benchmarks) loads it once with
``Manifest.load`` and takes what it needs from the object, so a training start reads
the file once, and every "missing manifest / missing split / missing shard" error is
written here, once, saying what to do.

Layout of the file (``records.writer._manifest``)::

  {"format_version": 1, "class_names": ["cat", "dog"],
   "settings": {"max_short_side": int | null, ...the converter settings...},
   "inputs_found": int, "accounting": {...},
   "splits": {"train": {"num_examples": int, "class_counts": {"cat": int, "dog": int},
                        "shards": [{"file": "train-00000-of-00004.tfrecord",
                                    "num_examples": int, "sha256": "<hex>"}, ...]},
              "val": {...},
              "test": {...}},  # only with --test_fraction > 0 (and older folders have none)
   "skipped": [...], "duplicates": [...], "converted": [...]}
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import tensorflow as tf

from records import schema
from records.photo import StoreSettings


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file of a split."""

    file: str
    path: str
    num_examples: int
    sha256: str | None


@dataclasses.dataclass(frozen=True)
class Split:
    """One split (``train``, ``val`` or ``test``) of a records directory."""

    name: str
    num_examples: int
    class_counts: dict[str, int]
    shards: tuple[Shard, ...]

    @property
    def paths(self) -> list[str]:
        return [shard.path for shard in self.shards]

    @property
    def counts(self) -> list[int]:
        return [shard.num_examples for shard in self.shards]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a records directory holds, from its ``manifest.json``.

    Attributes:
      records_dir: The directory.
      class_names: Class names in label order.
      max_short_side: The converter's ``--max_short_side`` (None: original sizes).
      splits: Split name -> ``Split``.
      data: The whole parsed JSON (skipped files, duplicates, accounting ...).
    """

    records_dir: str
    class_names: tuple[str, ...]
    max_short_side: int | None
    splits: dict[str, Split]
    data: dict[str, Any]

    @property
    def path(self) -> str:
        return schema.manifest_path(self.records_dir)

    @classmethod
    def load(cls, records_dir: str) -> Manifest:
        """Reads and checks ``records_dir/manifest.json``.

        Raises:
          FileNotFoundError: No manifest (saying how to make one).
          ValueError: Unreadable, or of another format version.
        """
        path = schema.manifest_path(records_dir)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"no {schema.MANIFEST_NAME} in {records_dir!r}: convert images first with "
                f"`make_records --input=<images> --output_dir={records_dir}`"
            )
        with tf.io.gfile.GFile(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); rerun make_records") from e
        version = data.get("format_version")
        if version != schema.FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version!r}, this code reads "
                f"{schema.FORMAT_VERSION}; rerun make_records with this version"
            )
        splits = {}
        for name, info in (data.get("splits") or {}).items():
            shards = tuple(
                Shard(
                    file=s["file"],
                    path=os.path.join(records_dir, s["file"]),
                    num_examples=int(s["num_examples"]),
                    sha256=s.get("sha256"),
                )
                for s in info.get("shards", [])
            )
            splits[name] = Split(
                name=name,
                num_examples=int(info.get("num_examples", 0)),
                class_counts=dict(info.get("class_counts", {})),
                shards=shards,
            )
        return cls(
            records_dir=records_dir,
            class_names=tuple(data.get("class_names", schema.CLASS_NAMES)),
            max_short_side=(data.get("settings") or {}).get("max_short_side"),
            splits=splits,
            data=data,
        )

    @property
    def store_settings(self) -> StoreSettings:
        """How these records store photos (every prediction path repeats it)."""
        return StoreSettings.from_settings(self.data.get("settings") or {})

    def num_examples(self, split: str) -> int:
        """Examples in ``split``; 0 when the manifest has no such split."""
        return self.splits[split].num_examples if split in self.splits else 0

    def split(self, name: str, *, check_files: bool = True) -> Split:
        """The split ``name``, its shard files checked to exist.

        Raises:
          ValueError: The manifest lists no shards for that split.
          FileNotFoundError: A listed shard is missing on disk.
        """
        split = self.splits.get(name)
        if split is None or not split.shards:
            raise ValueError(
                f"{self.path} lists no shards for split {name!r} (it has "
                f"{sorted(s for s, info in self.splits.items() if info.shards)}); rerun "
                "make_records (a val split needs --val_fraction > 0, a test split "
                "--test_fraction > 0)"
            )
        if check_files:
            missing = [p for p in split.paths if not tf.io.gfile.exists(p)]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} shard(s) listed in {self.path} are missing, e.g. "
                    f"{missing[0]}; rerun the same make_records command to finish the conversion"
                )
        return split
