"""Walking an input folder: every file below it, and every folder that could not be read.

``os.walk`` drops what it cannot enter without a word: a symlinked folder (unless
``followlinks``), a folder that cannot be listed (unless ``onerror``). Here every folder
found is either read or reported with its reason, and ``Walk`` counts both so that the
caller can check ``folders_found == folders_read + len(bad_folders)``.

Symlinked folders are followed, because a folder-per-class layout is often assembled
from links (``cats -> /data/real_cats``). Each real folder, identified by its
``(st_dev, st_ino)``, is read once: a symlink that leads back to one of its own parent
folders (a loop), or to a folder already read, is reported instead of followed. Real
(non-symlink) paths are walked before any symlink is followed, so a folder reached both
ways is read under its real path.

Imports no TensorFlow (runs in the converter's main process, next to pool workers).
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass
class Walk:
    """What ``walk`` found below one root.

    Attributes:
      files: Every non-folder entry (regular files, broken symlinks, FIFOs ...) as a
        posix path relative to the root, sorted.
      bad_folders: ``(relative path, reason)`` of each folder that was not read, sorted.
      folders_found: Folders seen, the root and symlinked ones included.
      folders_read: Folders whose entries were listed.
    """

    files: list[str] = dataclasses.field(default_factory=list)
    bad_folders: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    folders_found: int = 0
    folders_read: int = 0


def _shown(relpath: str) -> str:
    return f"{relpath}/" if relpath else "the input folder itself"


def walk(root: str) -> Walk:
    """Lists every file below ``root``, following symlinked folders once each.

    Args:
      root: The folder to walk.

    Returns:
      The files and the folders that could not be read, with their reasons.

    Raises:
      OSError: If ``root`` itself cannot be listed.
    """
    found = Walk(folders_found=1)
    read: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> relpath it was read as
    # Two stacks: every folder reachable through real paths is read before any symlink
    # is followed, so that the real path, not a link to it, is the one listed.
    real_pending, link_pending = [""], []
    while real_pending or link_pending:
        relpath = real_pending.pop() if real_pending else link_pending.pop()
        full = os.path.join(root, *relpath.split("/")) if relpath else root
        try:
            status = os.stat(full)
            key = (status.st_dev, status.st_ino)
            if key in read:
                first = read[key]
                if not first or relpath.startswith(first + "/"):
                    reason = (
                        f"symlink loop: leads back to {_shown(first)}, which contains it; "
                        "not followed"
                    )
                else:
                    reason = f"same folder as {first}/, already listed there; not followed again"
                found.bad_folders.append((relpath, reason))
                continue
            with os.scandir(full) as scan:
                entries = sorted(scan, key=lambda entry: entry.name, reverse=True)
        except OSError as e:
            if not relpath:
                raise
            found.bad_folders.append((relpath, f"folder cannot be read: {e.strerror or e}"))
            continue
        read[key] = relpath
        found.folders_read += 1
        for entry in entries:  # reversed, so that the stacks pop them in name order
            child = f"{relpath}/{entry.name}" if relpath else entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks: a link to a folder is a folder
                is_link = entry.is_symlink()
            except OSError:
                is_dir = False  # e.g. a symlink to itself: listed as an unreadable file
            if not is_dir:
                found.files.append(child)
                continue
            found.folders_found += 1
            (link_pending if is_link else real_pending).append(child)
    found.files.sort()
    found.bad_folders.sort()
    return found
