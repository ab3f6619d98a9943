"""Tests for records/manifest.py: ``Manifest.load`` reads a records directory's manifest
into typed splits and shards, and every way it can be wrong fails with a message that
says what to do."""

from __future__ import annotations

import json

import pytest

from conftest import alternating_examples, write_records
from records import schema
from records.manifest import Manifest
from records.photo import StoreSettings


def _rewrite(records_dir, **changes) -> None:
    path = records_dir / schema.MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_load_reads_splits_and_shards(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    assert manifest.class_names == schema.CLASS_NAMES
    assert sorted(manifest.splits) == ["train", "val"]
    train = manifest.split("train")
    assert train.num_examples == 24 and manifest.num_examples("val") == 12
    assert train.class_counts == {"cat": 12, "dog": 12}
    assert [s.file for s in train.shards] == [
        schema.shard_name("train", 0, 2),
        schema.shard_name("train", 1, 2),
    ]
    assert train.paths == [str(tiny_records / s.file) for s in train.shards]
    assert train.counts == [12, 12] and sum(train.counts) == train.num_examples
    assert all(len(s.sha256) == 64 for s in train.shards)
    assert manifest.path == str(tiny_records / schema.MANIFEST_NAME)


def test_no_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert images first with `make_records"):
        Manifest.load(str(tmp_path))


def test_bad_json_says_to_rerun_make_records(tiny_records):
    (tiny_records / schema.MANIFEST_NAME).write_text('{"format_version": 1, "splits": ')
    with pytest.raises(ValueError, match="is not valid JSON .*rerun make_records"):
        Manifest.load(str(tiny_records))


@pytest.mark.parametrize("version", [schema.FORMAT_VERSION + 1, None, "1"])
def test_another_format_version_is_refused(tiny_records, version):
    _rewrite(tiny_records, format_version=version)
    with pytest.raises(ValueError, match=f"has format_version {version!r}, this code reads"):
        Manifest.load(str(tiny_records))


def test_unknown_split_names_the_splits_there_are(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    assert manifest.num_examples("test") == 0
    with pytest.raises(ValueError, match=r"no shards for split 'test' \(it has \['train', 'val'\]"):
        manifest.split("test")
    # Records made before --test_fraction (or without it) have no test split: say how.
    with pytest.raises(ValueError, match="a test split --test_fraction > 0"):
        manifest.split("test")


def test_a_split_without_shards_asks_for_a_val_fraction(tmp_path):
    write_records(tmp_path, {"train": alternating_examples(4, 0), "val": []}, num_shards=1)
    _rewrite(
        tmp_path,
        splits={
            **json.loads((tmp_path / schema.MANIFEST_NAME).read_text())["splits"],
            "val": {"num_examples": 0, "class_counts": {}, "shards": []},
        },
    )
    manifest = Manifest.load(str(tmp_path))
    with pytest.raises(ValueError, match="a val split needs --val_fraction > 0"):
        manifest.split("val")


def test_a_missing_shard_file_is_found_unless_told_not_to_look(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    (tiny_records / schema.shard_name("val", 1, 2)).unlink()
    with pytest.raises(FileNotFoundError, match="1 shard.* missing.*rerun the same make_records"):
        manifest.split("val")
    assert manifest.split("val", check_files=False).num_examples == 12
    assert manifest.split("train").num_examples == 24


def test_store_settings_come_from_the_converter_settings(tiny_records):
    # write_records' settings name neither: originals kept, the converter's default quality.
    default = Manifest.load(str(tiny_records))
    assert default.max_short_side is None
    assert default.store_settings == StoreSettings.from_settings({})
    assert default.store_settings.max_short_side is None

    _rewrite(tiny_records, settings={"max_short_side": 160, "jpeg_quality": 75})
    resized = Manifest.load(str(tiny_records))
    assert resized.max_short_side == 160
    assert resized.store_settings.max_short_side == 160
    assert resized.store_settings.jpeg_quality == 75
    assert resized.store_settings != default.store_settings
