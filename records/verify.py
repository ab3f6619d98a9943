"""verify_records: reads every shard back and checks it against manifest.json.

Usage:
  verify_records --records_dir=build/records

Checks each listed shard's sha256 and example count, every record's label, label text,
height/width against the decoded image (``tf.io.decode_jpeg(channels=3)``), per-class
counts per split, that no image identity (sha256 key) appears twice, that no
unlisted shard files lie beside the listed ones, and the manifest's accounting.
Exits 1 with the list of problems if any check fails.
"""

from __future__ import annotations

import collections
import hashlib
import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from records import cli, schema

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines verify_records' flags (idempotent; at run time, not import, see make_records)."""
    if "records_dir" in flag_values:
        return
    flags.DEFINE_string(
        "records_dir",
        None,
        "Directory holding manifest.json and the shards.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "decode",
        True,
        "Decode every image (slower; catches undecodable bytes).",
        flag_values=flag_values,
    )


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_record(
    serialized: bytes, where: str, class_names: list[str], decode: bool
) -> tuple[int | None, str | None, list[str]]:
    """Returns (label, sha256 key, problems) for one serialized example."""
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as e:  # protobuf's DecodeError; any failure means a bad record.
        return None, None, [f"{where}: not a tf.train.Example ({e})"]
    feature = example.features.feature

    def single(key: str, kind: str):
        values = getattr(feature[key], kind).value if key in feature else []
        return values[0] if len(values) == 1 else None

    problems = []
    label = single(schema.LABEL, "int64_list")
    filename = (single(schema.FILENAME, "bytes_list") or b"?").decode(errors="replace")
    where = f"{where} ({filename})"
    if label is None or not 0 <= label < len(class_names):
        problems.append(f"{where}: bad label {label!r}")
        label = None
    else:
        text = single(schema.LABEL_TEXT, "bytes_list")
        if text is not None and text.decode() != class_names[label]:
            problems.append(f"{where}: label {label} but label text {text.decode()!r}")
    sha = single(schema.SHA256, "bytes_list")
    sha = sha.decode() if sha else None
    if not sha:
        problems.append(f"{where}: no {schema.SHA256}")
    encoded = single(schema.ENCODED, "bytes_list")
    height, width = single(schema.HEIGHT, "int64_list"), single(schema.WIDTH, "int64_list")
    if encoded is None:
        problems.append(f"{where}: no {schema.ENCODED}")
    elif not encoded.startswith(b"\xff\xd8\xff"):
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
    return label, sha, problems


def verify_records(records_dir: str, decode: bool = True) -> list[str]:
    """Checks a records directory against its manifest.

    Args:
      records_dir: Directory with ``manifest.json`` and shards.
      decode: Also decode every image (the slow part).

    Returns:
      Human-readable problems; empty when everything matches.
    """
    try:
        manifest = schema.read_manifest(records_dir)
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    class_names = manifest.get("class_names", list(schema.CLASS_NAMES))
    problems: list[str] = []
    seen_sha: dict[str, str] = {}
    listed = set()
    for split, info in sorted(manifest.get("splits", {}).items()):
        class_counts = collections.Counter()
        total = 0
        for shard in info.get("shards", []):
            listed.add(shard["file"])
            path = os.path.join(records_dir, shard["file"])
            if not tf.io.gfile.exists(path):
                problems.append(f"{shard['file']}: listed in the manifest but missing")
                continue
            if shard.get("sha256") and _file_sha256(path) != shard["sha256"]:
                problems.append(f"{shard['file']}: sha256 differs from the manifest (file changed)")
            count = 0
            try:
                for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
                    where = f"{shard['file']} record {count}"
                    label, sha, record_problems = _check_record(
                        serialized, where, class_names, decode
                    )
                    problems.extend(record_problems)
                    count += 1
                    if label is not None:
                        class_counts[class_names[label]] += 1
                    if sha:
                        if sha in seen_sha:
                            problems.append(f"{where}: same sha256 key as {seen_sha[sha]}")
                        seen_sha[sha] = where
            except tf.errors.OpError as e:
                problems.append(
                    f"{shard['file']}: unreadable after record {count} ({e.message.splitlines()[0]})"
                )
            if count != shard.get("num_examples"):
                problems.append(
                    f"{shard['file']}: {count} examples, manifest says {shard.get('num_examples')}"
                )
            total += count
        if total != info.get("num_examples"):
            problems.append(
                f"split {split}: {total} examples, manifest says {info.get('num_examples')}"
            )
        expected_counts = info.get("class_counts", {})
        for name in class_names:
            if class_counts[name] != expected_counts.get(name, 0):
                problems.append(
                    f"split {split}: {class_counts[name]} {name!r} examples, manifest says "
                    f"{expected_counts.get(name, 0)}"
                )
    stray = sorted(
        name
        for name in tf.io.gfile.listdir(records_dir)
        if schema.parse_shard_name(name) and name not in listed
    )
    if stray:
        problems.append(f"shard files not in the manifest (stale?): {', '.join(stray)}")
    accounting = manifest.get("accounting")
    if accounting:
        written = sum(info.get("num_examples", 0) for info in manifest["splits"].values())
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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.records_dir:
        raise app.UsageError("--records_dir is required")
    if not os.path.isdir(FLAGS.records_dir):
        raise app.UsageError(f"--records_dir {FLAGS.records_dir!r} is not a directory")
    logging.info("verifying %s (decode=%s)", FLAGS.records_dir, FLAGS.decode)
    problems = verify_records(FLAGS.records_dir, decode=FLAGS.decode)
    report(FLAGS.records_dir, problems)
    if problems:
        sys.exit(1)


def run() -> None:
    cli.run(main, __name__, define_flags)


if __name__ == "__main__":
    run()
