"""Tests for core/files.py: the sha256 of a file and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from core import files


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7])
def test_sha256_file_matches_hashlib_across_block_boundaries(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_sha256_file_reads_through_the_given_opener(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    opened = []

    def opener(name, mode):
        opened.append((name, mode))
        return open(name, mode)

    assert files.sha256_file(str(path), opener) == hashlib.sha256(b"abc").hexdigest()
    assert opened == [(str(path), "rb")]


def test_sha256_file_of_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.sha256_file(str(tmp_path / "nothing"))


def test_write_json_atomically_writes_sorted_json_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.json"
    files.write_json_atomically(str(path), {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().endswith("\n")
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_write_json_atomically_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "state.json"
    files.write_json_atomically(str(path), {"version": 1})
    # A value json cannot write fails before the rename: the old file stays whole.
    with pytest.raises(TypeError):
        files.write_json_atomically(str(path), {"version": object()})
    assert json.loads(path.read_text()) == {"version": 1}
    files.write_json_atomically(str(path), {"version": 2})
    assert json.loads(path.read_text()) == {"version": 2}
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
