"""Tests for core/files.py: the sha256 of a file, atomic writes and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
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


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("old")
    with files.atomic_write(str(path)) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path) and temporary != str(path)
        with open(temporary, "w") as f:
            f.write("new")
        assert path.read_text() == "old"  # Nothing is replaced before the body is done.
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["history.csv"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_inside_leaves_the_old_file_and_no_temp(tmp_path, error):
    path = tmp_path / "best.keras"
    path.write_text("old")
    with pytest.raises(error):
        with files.atomic_write(str(path), extension=".keras") as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise error
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["best.keras"]


def test_an_error_before_the_temp_exists_is_the_error_raised(tmp_path):
    path = tmp_path / "state.json"
    with pytest.raises(ValueError, match="the body's own"):
        with files.atomic_write(str(path)):
            raise ValueError("the body's own")
    assert os.listdir(tmp_path) == []


def test_a_body_that_writes_nothing_replaces_nothing(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(FileNotFoundError, match=r"state\.json\.tmp"):
        with files.atomic_write(str(path)):
            pass
    assert path.read_text() == "old"


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    path = str(tmp_path / "state.json")
    with files.atomic_write(path) as temporary:
        with open(temporary, "w") as f:
            f.write("{}")
    assert events == [
        ("fsync", temporary),
        ("replace", temporary, path),
        ("fsync", str(tmp_path)),
    ]


def test_the_temp_name_keeps_the_extension_a_writer_insists_on(tmp_path):
    # np.savez appends .npz to a name without it: the temp name must already end in .npz.
    path = str(tmp_path / "features.npz")
    with files.atomic_write(path, extension=".npz") as temporary:
        np.savez(temporary, vectors=np.arange(3))
    with np.load(path) as data:
        np.testing.assert_array_equal(data["vectors"], np.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["features.npz"]
    assert files.temporary_path("m/best.keras", ".keras") == "m/best.tmp.keras"
    assert files.temporary_path("m/x.weights.h5", ".weights.h5", per_process=True) == (
        f"m/x.tmp-{os.getpid()}.weights.h5"
    )
    assert files.temporary_path("m/manifest.json") == "m/manifest.json" + files.TMP_SUFFIX
    with pytest.raises(ValueError, match=r"m/best\.h5 does not end with '\.keras'"):
        files.temporary_path("m/best.h5", ".keras")
