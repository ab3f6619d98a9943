"""Tests for trainer/models/legacy_pth.py: legacy PyTorch files read with numpy, and refused when
unsafe.

The files are written here in torch's legacy layout by a stand-in ``torch`` module (torch
itself is not installed), so the pickles name exactly what torch's would.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types

import numpy as np
import pytest

from core import files
from trainer.models import efficientnet_lite, legacy_pth


class _Storage:
    """A torch storage as torch pickles it: a persistent id, then its bytes after the pickles."""

    def __init__(self, kind: type, key: str, data: np.ndarray):
        self.kind, self.key, self.data = kind, key, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a ``torch`` module for pickle to name torch's globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size)
        return None


def write_legacy(path, state: dict, storages: list[_Storage]) -> None:
    """Writes ``state`` as torch's ``_legacy_save`` lays it out."""
    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    _LegacyPickler(buffer, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buffer, protocol=2)
    for storage in storages:
        buffer.write(storage.data.size.to_bytes(8, "little"))
        buffer.write(storage.data.tobytes())
    path.write_bytes(buffer.getvalue())


def small_state(torch):
    weights = np.arange(24, dtype="<f4")
    count = np.array([7], dtype="<i8")
    w, c = _Storage(torch.FloatStorage, "0", weights), _Storage(torch.LongStorage, "1", count)
    state = collections.OrderedDict(
        conv=_Tensor(w, 0, (2, 3, 2, 2), (12, 4, 2, 1)),
        # A transposed view of a slice of the same storage: offset and strides matter.
        fc=_Tensor(w, 4, (3, 2), (1, 3)),
        count=_Tensor(c, 0, (), ()),
    )
    return state, [w, c], weights


def test_reads_tensors_with_offsets_and_strides(fake_torch, tmp_path):
    state, storages, weights = small_state(fake_torch)
    write_legacy(tmp_path / "w.pth", state, storages)
    loaded = legacy_pth.load_state_dict(str(tmp_path / "w.pth"))
    np.testing.assert_array_equal(loaded["conv"], weights.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(loaded["fc"], weights[4:10].reshape(2, 3).T)
    assert loaded["count"].shape == () and int(loaded["count"]) == 7
    assert loaded["conv"].dtype == np.float32 and loaded["count"].dtype == np.int64


def test_checksum_is_checked_before_reading(fake_torch, tmp_path):
    state, storages, _ = small_state(fake_torch)
    path = tmp_path / "w.pth"
    write_legacy(path, state, storages)
    good = files.sha256_file(str(path))
    legacy_pth.load_state_dict(str(path), sha256=good)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # One weight changed.
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"sha256 .* is not the expected {good}"):
        legacy_pth.load_state_dict(str(path), sha256=good)


def test_truncated_file_is_an_error(fake_torch, tmp_path):
    state, storages, _ = small_state(fake_torch)
    path = tmp_path / "w.pth"
    write_legacy(path, state, storages)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        legacy_pth.load_state_dict(str(path))


class _Exploit:
    """What a malicious weights file holds: a call to run on unpickling."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["state dict", "inside a tensor's arguments"])
def test_a_pickle_naming_any_other_callable_is_refused_without_running_it(
    fake_torch, tmp_path, where
):
    marker = tmp_path / "pwned"
    state, storages, _ = small_state(fake_torch)
    if where == "state dict":
        state = _Exploit(marker)
    else:
        state["conv"].args = (*state["conv"].args[:5], _Exploit(marker))
    write_legacy(tmp_path / "evil.pth", state, storages)
    with pytest.raises(legacy_pth.UnsafePickleError, match="refusing to load (posix|os).system"):
        legacy_pth.load_state_dict(str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_other_files_are_clear_errors(tmp_path):
    (tmp_path / "notes.pth").write_bytes(pickle.dumps("hello"))
    with pytest.raises(ValueError, match="not a legacy PyTorch .pth file"):
        legacy_pth.load_state_dict(str(tmp_path / "notes.pth"))
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 a torch >= 1.6 zip")
    with pytest.raises(ValueError, match="not a legacy PyTorch .pth file"):
        legacy_pth.load_state_dict(str(tmp_path / "zip.pth"))


@pytest.mark.parametrize("variant", efficientnet_lite.VARIANTS)
def test_the_packaged_imagenet_file_passes_its_checksum_and_a_tampered_copy_does_not(
    variant, tmp_path
):
    sha256 = efficientnet_lite.VARIANTS[variant].pth_sha256
    path = efficientnet_lite.package_weights_file(variant)
    state = legacy_pth.load_state_dict(path, sha256=sha256)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    copy = tmp_path / "copy.pth"
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01  # One bit of one weight.
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        legacy_pth.load_state_dict(str(copy), sha256=sha256)
