"""verify_records: reads every shard back and checks it against manifest.json.

Usage:
  verify_records --records_dir=build/records

Checks each listed shard's sha256 and example count, every record's label, label text,
height/width against the decoded image (``tf.io.decode_jpeg(channels=3)``), per-class
counts per split (train, val and test alike), that no image identity (sha256 key)
appears twice, that each record lies in the split the manifest's split rule gives its
sha256 (``records.plan.split_of``), that no unlisted shard files lie beside the listed
ones, and the manifest's accounting. Exits 1 with the list of problems if any check fails.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from core import files, settings
from records import plan, schema
from records.manifest import Manifest

# Records are parsed this many at a time with the schema's feature spec.
_PARSE_CHUNK = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyConfig:
    """Settings of ``verify_records``."""

    records_dir: str = settings.setting(help="Directory holding manifest.json and the shards.")
    decode: bool = settings.setting(True, "Decode every image (slower; catches undecodable bytes).")

    def __post_init__(self):
        settings.check(self)


def _parse(serialized: list[bytes], where: list[str]) -> tuple[list[dict], list[str]]:
    """Parses records with ``schema.FEATURE_SPEC``: (one dict per parsed record, problems).

    A chunk that fails to parse is parsed record by record, so the problem names the
    record (a missing required feature, a wrong type, bytes that are no Example).
    """
    try:
        parsed = tf.io.parse_example(tf.constant(serialized), schema.FEATURE_SPEC)
    except tf.errors.InvalidArgumentError as e:
        if len(serialized) == 1:
            return [], [f"{where[0]}: does not parse with the schema ({e.message.splitlines()[0]})"]
        records, problems = [], []
        for one, one_where in zip(serialized, where):
            got, bad = _parse([one], [one_where])
            records.extend(got)
            problems.extend(bad)
        return records, problems
    columns = {key: value.numpy() for key, value in parsed.items()}
    return [
        {**{key: column[i] for key, column in columns.items()}, "where": where[i]}
        for i in range(len(serialized))
    ], []


def _check_record(record: dict, class_names: tuple[str, ...], decode: bool) -> list[str]:
    """Problems of one parsed record (label, label text, key, JPEG, size)."""
    filename = record[schema.FILENAME].decode("utf-8", "backslashreplace") or "?"
    where = f"{record['where']} ({filename})"
    problems = []
    label = int(record[schema.LABEL])
    if not 0 <= label < len(class_names):
        problems.append(f"{where}: bad label {label}")
    elif record[schema.LABEL_TEXT] and record[schema.LABEL_TEXT].decode() != class_names[label]:
        problems.append(
            f"{where}: label {label} but label text {record[schema.LABEL_TEXT].decode()!r}"
        )
    if not record[schema.SHA256]:
        problems.append(f"{where}: no {schema.SHA256}")
    encoded = record[schema.ENCODED]
    height, width = int(record[schema.HEIGHT]), int(record[schema.WIDTH])
    if not encoded.startswith(b"\xff\xd8\xff"):
        # decode_jpeg also accepts PNG/GIF/BMP, but the pipeline's decode_and_crop_jpeg
        # does not: stored images must really be JPEG.
        problems.append(f"{where}: stored bytes are not a JPEG (start {encoded[:4]!r})")
    elif decode:
        try:
            shape = tf.io.decode_jpeg(encoded, channels=3).shape
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            problems.append(f"{where}: image does not decode as JPEG ({e.message.splitlines()[0]})")
        else:
            if (height, width) != (shape[0], shape[1]):
                problems.append(
                    f"{where}: stored size {height}x{width} but image decodes to "
                    f"{shape[0]}x{shape[1]}"
                )
    return problems


def _split_rule(manifest: Manifest) -> tuple[Callable[[str], str] | None, list[str]]:
    """sha256 -> the split the manifest's rule puts it in (None: nothing to check against),
    and the problems with the rule itself."""
    found = manifest.data.get("settings") or {}
    if "split_rule" not in found:
        return None, []  # Not written by make_records (hand-made records in tests ...).
    val_fraction = float(found.get("val_fraction", 0.0))
    # Absent from conversions without a test split (the settings of older ones too).
    test_fraction = float(found.get("test_fraction", 0.0))
    if found["split_rule"] != plan.split_rule(test_fraction):
        return None, [
            f"settings: split_rule {found['split_rule']!r} is not this code's rule for "
            f"test_fraction {test_fraction} ({plan.split_rule(test_fraction)!r}); split "
            "membership not checked: rerun make_records"
        ]
    return lambda sha256: plan.split_of(sha256, val_fraction, test_fraction), []


def _shard_records(path: str, file: str) -> tuple[list[dict], list[str], int]:
    """Every record of one shard, parsed; the problems found reading it; the records read."""
    records, problems, count = [], [], 0
    try:
        for chunk in tf.data.TFRecordDataset(path).batch(_PARSE_CHUNK).as_numpy_iterator():
            got, bad = _parse(
                list(chunk), [f"{file} record {count + i}" for i in range(len(chunk))]
            )
            records.extend(got)
            problems.extend(bad)
            count += len(chunk)
    except tf.errors.OpError as e:
        problems.append(f"{file}: unreadable after record {count} ({e.message.splitlines()[0]})")
    return records, problems, count


def _check_split(record: dict, split: str, split_of: Callable[[str], str] | None) -> list[str]:
    """A record in another split than its sha256 belongs to: moved, or a rule not kept."""
    if split_of is None:
        return []
    sha = record[schema.SHA256].decode("ascii", "replace")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        return [f"{record['where']}: sha256 key {sha!r} is not 64 hex digits"]
    expected = split_of(sha)
    if expected != split:
        return [
            f"{record['where']}: sha256 {sha[:16]}... belongs in split {expected} by the "
            f"manifest's split rule, but is in {split}"
        ]
    return []


def verify_records(records_dir: str, decode: bool = True) -> list[str]:
    """Checks a records directory against its manifest.

    Args:
      records_dir: Directory with ``manifest.json`` and shards.
      decode: Also decode every image (the slow part).

    Returns:
      Human-readable problems; empty when everything matches.
    """
    try:
        manifest = Manifest.load(records_dir)
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    class_names = manifest.class_names
    split_of, problems = _split_rule(manifest)
    seen_sha: dict[bytes, str] = {}
    listed = set()
    for name, split in sorted(manifest.splits.items()):
        class_counts: collections.Counter = collections.Counter()
        total = 0
        for shard in split.shards:
            listed.add(shard.file)
            if not tf.io.gfile.exists(shard.path):
                problems.append(f"{shard.file}: listed in the manifest but missing")
                continue
            if shard.sha256 and files.sha256_file(shard.path, tf.io.gfile.GFile) != shard.sha256:
                problems.append(f"{shard.file}: sha256 differs from the manifest (file changed)")
            records, read_problems, count = _shard_records(shard.path, shard.file)
            problems.extend(read_problems)
            for record in records:
                problems.extend(_check_record(record, class_names, decode))
                label = int(record[schema.LABEL])
                if 0 <= label < len(class_names):
                    class_counts[class_names[label]] += 1
                sha = record[schema.SHA256]
                if sha:
                    if sha in seen_sha:
                        problems.append(f"{record['where']}: same sha256 key as {seen_sha[sha]}")
                    seen_sha[sha] = record["where"]
                    problems.extend(_check_split(record, name, split_of))
            if count != shard.num_examples:
                problems.append(
                    f"{shard.file}: {count} examples, manifest says {shard.num_examples}"
                )
            total += count
        if total != split.num_examples:
            problems.append(f"split {name}: {total} examples, manifest says {split.num_examples}")
        for class_name in class_names:
            expected = split.class_counts.get(class_name, 0)
            if class_counts[class_name] != expected:
                problems.append(
                    f"split {name}: {class_counts[class_name]} {class_name!r} examples, "
                    f"manifest says {expected}"
                )
    stray = sorted(
        name
        for name in tf.io.gfile.listdir(records_dir)
        if schema.parse_shard_name(name) and name not in listed
    )
    if stray:
        problems.append(f"shard files not in the manifest (stale?): {', '.join(stray)}")
    accounting = manifest.data.get("accounting")
    if accounting:
        written = sum(split.num_examples for split in manifest.splits.values())
        if written != accounting["written"]:
            problems.append(
                f"accounting: {written} written in splits, accounting says {accounting['written']}"
            )
        if (
            accounting["written"] + accounting["skipped"] + accounting["duplicates"]
            != accounting["inputs_found"]
        ):
            problems.append(f"accounting does not add up: {accounting}")
    return problems


def report(records_dir: str, problems: list[str]) -> None:
    """Logs the outcome of ``verify_records``."""
    if not problems:
        logging.info("%s: every shard, count, label and image checks out", records_dir)
        return
    logging.error("%s: %d problem(s):", records_dir, len(problems))
    for problem in problems:
        logging.error("  %s", problem)


def main(config: VerifyConfig) -> int:
    if not os.path.isdir(config.records_dir):
        raise FileNotFoundError(f"--records_dir {config.records_dir!r} is not a directory")
    problems = verify_records(config.records_dir, decode=config.decode)
    report(config.records_dir, problems)
    return 1 if problems else 0


def run() -> None:
    settings.run(VerifyConfig, main, __name__)


if __name__ == "__main__":
    run()
