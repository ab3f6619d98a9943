"""Reads a PyTorch *legacy* (pre-1.6, non-zip) ``.pth`` state dict with numpy alone.

Why not ``torch.load``: torch is gigabytes of wheels for one 18 MB file, and
``torch.load`` on an untrusted file runs arbitrary code (a ``.pth`` is a pickle). Here
the pickle is read by an unpickler that resolves only the handful of names a state dict
of tensors needs and refuses every other one *before* anything is called, and the file's
sha256 is checked first when its origin is known.

The legacy layout (``torch.serialization._legacy_save``) is five pickles in a row, then
the raw storages:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version (1001);
3. system info (byte order, type sizes);
4. the object itself (here an ``OrderedDict`` of name -> tensor), where each tensor is
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and each
   storage is a persistent id ``("storage", torch.FloatStorage, key, location, numel)``;
5. the list of storage keys, in the order their data follows;

then, for each key, an 8-byte little-endian element count and that many elements.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle

import numpy as np

from core import files

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# torch storage class -> numpy dtype (little-endian, as torch writes on x86 and Arm).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The file names a Python object outside what a legacy state dict may contain."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` etc.: only its element type matters."""

    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage's bytes follow the pickles: materialised once they are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
    # The remaining arguments (requires_grad, backward hooks, metadata) do not matter for
    # weights; the backward-hooks OrderedDict is built by the unpickler like any other.
    del unused
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a legacy state dict needs; anything else is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        # Refused by name, so nothing the file names is imported or called.
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: a weights file may only hold tensors "
            "(OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r} in a legacy .pth file")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"storage {key!r} has no torch storage type")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    data = storages[ref.storage.key]
    itemsize = data.dtype.itemsize
    needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) + 1
    if min(ref.shape, default=1) > 0 and needed > data.size:
        raise ValueError(
            f"tensor of shape {ref.shape} reaches past its storage {ref.storage.key!r}"
        )
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :],
        shape=ref.shape,
        strides=tuple(s * itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view)  # A contiguous copy that owns its memory.


def load_state_dict(path: str, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Reads a legacy-format PyTorch state dict as name -> numpy array.

    Args:
      path: The ``.pth`` file.
      sha256: The file's expected sha256 (hex); checked before anything is unpickled.

    Raises:
      ValueError: Wrong checksum, not a legacy .pth file, or truncated.
      UnsafePickleError: The pickle names anything but a state dict of tensors.
    """
    if sha256 is not None:
        actual = files.sha256_file(path)
        if actual != sha256:
            raise ValueError(
                f"{path}: sha256 {actual} is not the expected {sha256}: the file was changed "
                "or damaged; reinstall the package that ships it"
            )
    with open(path, "rb") as f:
        data = f.read()
    stream = io.BytesIO(data)

    def next_pickle():
        try:
            return _RestrictedUnpickler(stream).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ValueError(f"{path} is not a legacy PyTorch .pth file: {e}") from None

    if next_pickle() != _MAGIC_NUMBER:
        raise ValueError(
            f"{path} is not a legacy PyTorch .pth file (wrong magic number; files saved by "
            "torch >= 1.6 are zip archives, which this reader does not handle)"
        )
    if next_pickle() != _PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy .pth protocol version")
    next_pickle()  # System info: byte order and type sizes, always little-endian here.
    state = next_pickle()
    keys = next_pickle()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise ValueError(f"{path} does not hold a state dict (name -> tensor)")
    refs = {name: value for name, value in state.items() if isinstance(value, _TensorRef)}
    storage_refs = {ref.storage.key: ref.storage for ref in refs.values()}
    storages = {}
    for key in keys:
        if key not in storage_refs:
            raise ValueError(f"{path}: storage {key!r} is listed but no tensor uses it")
        ref = storage_refs[key]
        header = stream.read(8)
        if len(header) != 8:
            raise ValueError(f"{path} is truncated (storage {key!r} missing)")
        numel = int.from_bytes(header, "little")
        nbytes = numel * ref.dtype.itemsize
        payload = stream.read(nbytes)
        if numel != ref.numel or len(payload) != nbytes:
            raise ValueError(f"{path} is truncated or damaged (storage {key!r})")
        storages[key] = np.frombuffer(payload, dtype=ref.dtype)
    missing = set(storage_refs) - set(storages)
    if missing:
        raise ValueError(f"{path}: no data for storages {sorted(missing)}")
    return {name: _materialise(ref, storages) for name, ref in refs.items()}
