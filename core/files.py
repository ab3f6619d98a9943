"""Files every command writes or checks: atomic writes and the sha256 of a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

TMP_SUFFIX = ".tmp"
_BLOCK_BYTES = 1 << 20


def sha256_file(path: str, opener: Callable[[str, str], IO[bytes]] = open) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks.

    Args:
      path: The file.
      opener: Opens ``path`` for reading (``tf.io.gfile.GFile`` for gs:// paths).
    """
    digest = hashlib.sha256()
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: str) -> None:
    # A read-only descriptor is enough for fsync, and opens a folder as well as a file.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: str, extension: str = "", per_process: bool = False) -> str:
    """The name ``atomic_write`` writes ``path`` under first (same folder, same extension).

    ``<path>.tmp`` by default; with ``extension`` (which ``path`` must end with)
    ``<path less extension>.tmp<extension>``, for writers that insist on their extension
    (Keras' ``.keras`` and ``.weights.h5``, ``np.savez``'s ``.npz``); ``per_process``
    adds the pid after ``.tmp``, for a file that processes may write at the same time.

    Raises:
      ValueError: ``path`` does not end with ``extension``.
    """
    if not path.endswith(extension):
        raise ValueError(f"{path} does not end with {extension!r}: cannot keep its extension")
    stem = path[: len(path) - len(extension)]
    pid = f"-{os.getpid()}" if per_process else ""
    return f"{stem}{TMP_SUFFIX}{pid}{extension}"


@contextlib.contextmanager
def atomic_write(path: str, extension: str = "", per_process: bool = False) -> Iterator[str]:
    """Yields a temporary path to write ``path`` under; renames it into place when done.

    The one way this project replaces a file. The body writes the temporary file (any
    writer: ``open``, ``np.savez``, Keras' ``save``); on leaving, the file is fsynced,
    renamed over ``path`` with ``os.replace`` and the folder fsynced. A reader therefore
    sees the old file or the new one, never half of one, whenever the process is killed,
    and a power cut after the rename keeps the new one. If the body raises, the
    temporary file is removed and ``path`` is left as it was.

    The temporary file sits in ``path``'s folder, so the rename never crosses a file
    system; its name is ``temporary_path(path, extension, per_process)``. Without
    ``per_process`` it is the same name every run, so a rerun after a kill overwrites
    the one the kill left.

    Args:
      path: The file to write.
      extension: An ending of ``path`` the temporary name must keep.
      per_process: Put the pid into the temporary name (two processes may write ``path``
        at once, such as a shared download cache; each renames its own whole file).

    Raises:
      ValueError: ``path`` does not end with ``extension``.
      FileNotFoundError: The body wrote no temporary file.
    """
    temporary = temporary_path(path, extension, per_process)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt in the body must not leave the temp file.
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync(os.path.dirname(os.path.abspath(path)))


def write_json_atomically(path: str, content: Any) -> None:
    """Writes ``content`` as sorted, indented JSON to ``path`` with ``atomic_write``
    (temp name ``path + TMP_SUFFIX``): readers never see half a file."""
    with atomic_write(path) as temporary, open(temporary, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
