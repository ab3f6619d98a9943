"""Tests for records.verify: a clean conversion passes; each kind of damage is named."""

from __future__ import annotations

import hashlib
import json

import pytest
import tensorflow as tf

from conftest import make_jpeg_bytes, run_command, write_kaggle_folder
from records import schema, verify, writer


@pytest.fixture
def converted(tmp_path):
    write_kaggle_folder(tmp_path / "train", 6)
    out = tmp_path / "out"
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(tmp_path / "train"),), output_dir=str(out), progress=False
        )
    )
    return out


@pytest.fixture
def with_test(tmp_path):
    """A conversion with all three splits: 12 cats and 12 dogs, val 0.25, test 0.25."""
    write_kaggle_folder(tmp_path / "train", 12)
    out = tmp_path / "with_test"
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(tmp_path / "train"),),
            output_dir=str(out),
            val_fraction=0.25,
            test_fraction=0.25,
            progress=False,
        )
    )
    return out


def _edit_manifest(records_dir, edit) -> None:
    path = records_dir / schema.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.slow
def test_clean_conversion_and_fixture_records_pass(converted, tiny_records):
    assert verify.verify_records(str(converted)) == []
    # The hand-written layout of tests/conftest.write_records is read the same way.
    assert verify.verify_records(str(tiny_records)) == []


def test_corrupted_shard_is_detected(converted):
    shard = converted / "train-00000-of-00004.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify.verify_records(str(converted))
    assert any("train-00000-of-00004.tfrecord: sha256 differs" in p for p in problems), problems
    # The flipped byte also breaks the record's CRC, so fewer records read back.
    assert any("unreadable after record" in p or "examples, manifest says" in p for p in problems)


def test_manifest_mismatches_are_listed(converted):
    def tamper(manifest):
        manifest["splits"]["train"]["class_counts"]["cat"] += 1
        manifest["splits"]["val"]["shards"][0]["num_examples"] += 2
        manifest["splits"]["val"]["num_examples"] += 2

    _edit_manifest(converted, tamper)
    problems = verify.verify_records(str(converted))
    assert any("split train:" in p and "'cat' examples, manifest says" in p for p in problems)
    assert any(
        "val-00000-of-00002.tfrecord:" in p and "examples, manifest says" in p for p in problems
    )
    assert any("split val:" in p for p in problems)


def test_missing_and_stray_shards(converted):
    (converted / "val-00001-of-00002.tfrecord").unlink()
    (converted / "train-00000-of-00009.tfrecord").write_bytes(b"")
    problems = verify.verify_records(str(converted))
    assert "val-00001-of-00002.tfrecord: listed in the manifest but missing" in problems
    assert any("not in the manifest" in p and "train-00000-of-00009" in p for p in problems)


def test_bad_records_are_named(tmp_path):
    records_dir = tmp_path / "records"
    records_dir.mkdir()
    good = make_jpeg_bytes(32, 40, seed=1)
    examples = [
        schema.make_example(
            encoded=good, label=0, filename="a.jpg", height=32, width=40, sha256="1" * 64
        ),
        schema.make_example(
            encoded=b"not a jpeg", label=1, filename="b.jpg", height=5, width=5, sha256="2" * 64
        ),
        schema.make_example(
            encoded=good, label=1, filename="c.jpg", height=99, width=40, sha256="1" * 64
        ),
        schema.make_example(
            encoded=good[:200], label=1, filename="d.jpg", height=32, width=40, sha256="4" * 64
        ),
    ]
    name = schema.shard_name("train", 0, 1)
    with tf.io.TFRecordWriter(str(records_dir / name)) as w:
        for example in examples:
            w.write(example.SerializeToString())
    shard_sha = hashlib.sha256((records_dir / name).read_bytes()).hexdigest()
    manifest = {
        "format_version": schema.FORMAT_VERSION,
        "class_names": ["cat", "dog"],
        "splits": {
            "train": {
                "num_examples": 4,
                "class_counts": {"cat": 1, "dog": 3},
                "shards": [{"file": name, "num_examples": 4, "sha256": shard_sha}],
            }
        },
    }
    (records_dir / schema.MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = verify.verify_records(str(records_dir))
    assert len(problems) == 4, problems
    assert any("record 1 (b.jpg): stored bytes are not a JPEG" in p for p in problems)
    assert any(
        "record 2 (c.jpg): stored size 99x40 but image decodes to 32x40" in p for p in problems
    )
    assert any(
        "record 2: same sha256 key as train-00000-of-00001.tfrecord record 0" in p for p in problems
    )
    assert any("record 3 (d.jpg): image does not decode" in p for p in problems)
    # Without decoding, the format check and the duplicate key remain.
    assert len(verify.verify_records(str(records_dir), decode=False)) == 2


def test_no_manifest_is_one_clear_problem(tmp_path):
    problems = verify.verify_records(str(tmp_path))
    assert (
        len(problems) == 1 and "no manifest.json" in problems[0] and "make_records" in problems[0]
    )


@pytest.mark.slow
def test_command_exits_1_and_lists_problems(converted):
    shard = converted / "val-00000-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    result = run_command("records.verify", f"--records_dir={converted}")
    assert result.returncode == 1, result.stderr
    assert "val-00000-of-00002.tfrecord: sha256 differs" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_test_split_is_checked_like_the_others(with_test):
    manifest = json.loads((with_test / schema.MANIFEST_NAME).read_text())
    assert manifest["splits"]["test"]["num_examples"] > 0
    assert verify.verify_records(str(with_test)) == []

    def tamper(manifest):
        manifest["splits"]["test"]["class_counts"]["dog"] += 1

    _edit_manifest(with_test, tamper)
    problems = verify.verify_records(str(with_test))
    assert len(problems) == 1 and "split test:" in problems[0], problems
    (with_test / "test-00001-of-00002.tfrecord").unlink()
    problems = verify.verify_records(str(with_test))
    assert "test-00001-of-00002.tfrecord: listed in the manifest but missing" in problems


def test_a_record_outside_the_split_its_sha256_gives_is_named(with_test):
    """A test record whose key the rule puts in train (the shard's sha256 in the manifest
    updated too, so that only the split rule can tell)."""
    shard = with_test / "test-00000-of-00002.tfrecord"
    examples = [
        tf.train.Example.FromString(r)
        for r in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()
    ]
    moved = examples[0].features.feature[schema.SHA256].bytes_list
    moved.value[0] = b"f" * 64  # the top of the hash range: train for any fractions < 1
    with tf.io.TFRecordWriter(str(shard)) as w:
        for example in examples:
            w.write(example.SerializeToString(deterministic=True))
    shard_sha = hashlib.sha256(shard.read_bytes()).hexdigest()

    def update(manifest):
        manifest["splits"]["test"]["shards"][0]["sha256"] = shard_sha

    _edit_manifest(with_test, update)
    problems = verify.verify_records(str(with_test))
    assert problems == [
        "test-00000-of-00002.tfrecord record 0: sha256 ffffffffffffffff... belongs in split "
        "train by the manifest's split rule, but is in test"
    ]


def test_a_split_rule_this_code_does_not_know_is_a_problem(converted):
    def tamper(manifest):
        manifest["settings"]["split_rule"] = "sha256[0] in '01' -> val"

    _edit_manifest(converted, tamper)
    problems = verify.verify_records(str(converted))
    assert len(problems) == 1 and "split_rule \"sha256[0] in '01' -> val\" is not" in problems[0]
