"""Tests for records/schema.py: an example survives make -> serialize -> parse, eagerly and
inside ``Dataset.map``, and shard names round-trip."""

from __future__ import annotations

import hashlib

import pytest
import tensorflow as tf

from conftest import make_jpeg_bytes
from records import schema


def _example_bytes(filename: str = "dog.7.jpg", label: int = 1) -> tuple[bytes, bytes]:
    encoded = make_jpeg_bytes(40, 56, seed=7)
    example = schema.make_example(
        encoded=encoded,
        label=label,
        filename=filename,
        height=40,
        width=56,
        sha256=hashlib.sha256(b"the source file").hexdigest(),
    )
    return encoded, example.SerializeToString()


def _check_parsed(parsed: dict, encoded: bytes, filename_bytes: bytes) -> None:
    assert set(parsed) == set(schema.FEATURE_SPEC)
    assert parsed[schema.ENCODED] == encoded
    assert parsed[schema.FORMAT] == b"jpeg"
    assert parsed[schema.LABEL] == 1
    assert parsed[schema.LABEL_TEXT] == b"dog"
    assert parsed[schema.FILENAME] == filename_bytes
    assert (parsed[schema.HEIGHT], parsed[schema.WIDTH]) == (40, 56)
    assert parsed[schema.SHA256] == hashlib.sha256(b"the source file").hexdigest().encode()


def test_example_round_trips_eagerly():
    encoded, serialized = _example_bytes()
    parsed = {k: v.numpy() for k, v in schema.parse_example(tf.constant(serialized)).items()}
    _check_parsed(parsed, encoded, b"dog.7.jpg")


def test_example_round_trips_through_a_written_record_inside_dataset_map(tmp_path):
    encoded, serialized = _example_bytes()
    path = str(tmp_path / schema.shard_name("train", 0, 1))
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(serialized)
    (parsed,) = list(tf.data.TFRecordDataset(path).map(schema.parse_example).as_numpy_iterator())
    _check_parsed(parsed, encoded, b"dog.7.jpg")


def test_a_non_utf8_file_name_is_stored_as_its_original_bytes():
    raw = b"chat-\xe9t\xe9.jpg"  # Latin-1 on disk: Python gives it surrogate escapes.
    name = raw.decode("utf-8", "surrogateescape")
    encoded, serialized = _example_bytes(filename=name)
    parsed = {k: v.numpy() for k, v in schema.parse_example(tf.constant(serialized)).items()}
    _check_parsed(parsed, encoded, raw)


def test_optional_features_take_their_defaults_when_absent():
    # A record written with only the required features (as another tool might).
    feature = {
        schema.ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        schema.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
        schema.HEIGHT: tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
        schema.WIDTH: tf.train.Feature(int64_list=tf.train.Int64List(value=[4])),
    }
    serialized = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    parsed = schema.parse_example(tf.constant(serialized))
    assert parsed[schema.FORMAT].numpy() == b"jpeg"
    assert parsed[schema.FILENAME].numpy() == b""
    assert parsed[schema.SHA256].numpy() == b""


@pytest.mark.parametrize("label", [-1, len(schema.CLASS_NAMES)])
def test_a_label_outside_the_classes_is_refused(label):
    with pytest.raises(ValueError, match=f"label {label} is not one of"):
        _example_bytes(label=label)


def test_shard_names_round_trip_and_other_names_are_none():
    name = schema.shard_name("val", 3, 16)
    assert name == "val-00003-of-00016.tfrecord"
    assert schema.parse_shard_name(name) == ("val", 3, 16)
    assert schema.parse_shard_name(f"/some/dir/{name}") == ("val", 3, 16)
    for other in ("manifest.json", "val-3-of-16.tfrecord", "val-00003-of-00016.tfrecord.tmp"):
        assert schema.parse_shard_name(other) is None
