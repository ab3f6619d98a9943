"""Files every command writes or checks: atomic JSON writes and the sha256 of a file."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
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


def write_json_atomically(path: str, content: Any) -> None:
    """Writes JSON under a temp name, fsyncs, renames: readers never see half a file.

    The temp name is ``path + TMP_SUFFIX`` in the same folder, so the rename never
    crosses a file system.
    """
    tmp = path + TMP_SUFFIX
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
