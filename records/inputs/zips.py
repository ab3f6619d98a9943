"""Reading a zip archive's entries safely: by entry (not by name), with a size cap.

``ZipFile.read(name)`` returns the *last* entry of that name, so an archive that holds a
name twice would give the second picture for both; entries are therefore read by their
position in the central directory. An entry's uncompressed size is checked before it
is read (``MAX_MEMBER_BYTES``), and the read itself is bounded, so neither a huge member
nor a header that understates its size can exhaust a worker's memory.

Imports no TensorFlow (runs in pool workers).
"""

from __future__ import annotations

import os
import zipfile

# Uncompressed size above which a member is skipped without being read. Real photos are
# far smaller (a 48 MP phone JPEG is ~15-25 MB); the cap keeps one lying or hostile
# entry from filling a worker's memory.
MAX_MEMBER_BYTES = 64 * 2**20


def too_large(size: int) -> str | None:
    """The skip reason for a member of ``size`` bytes uncompressed, or None if it fits."""
    if size <= MAX_MEMBER_BYTES:
        return None
    return f"zip member too large: {size} bytes uncompressed (limit {MAX_MEMBER_BYTES})"


def file_entries(path: str) -> list[tuple[int, zipfile.ZipInfo]]:
    """``(index, info)`` of every file entry (directories left out), in archive order.

    Raises:
      zipfile.BadZipFile, OSError: If the archive cannot be read.
    """
    with zipfile.ZipFile(path) as archive:
        return [(i, info) for i, info in enumerate(archive.infolist()) if not info.is_dir()]


# One open ZipFile per (process, archive): reopening parses the central directory
# (25,000 entries for Kaggle's train.zip) for every image. Keyed by pid so a forked
# worker never shares its parent's file offset.
_ZIP_CACHE: dict[tuple[int, str], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), path)
    if key not in _ZIP_CACHE:
        _ZIP_CACHE[key] = zipfile.ZipFile(path)
    return _ZIP_CACHE[key]


def read_member(path: str, member: str, index: int | None) -> bytes:
    """The bytes of one entry.

    Args:
      path: The zip archive.
      member: The entry's name (checked against the entry at ``index``).
      index: The entry's position in ``infolist()``; None reads the entry by name.

    Raises:
      OSError: If the entry cannot be read (corrupt, encrypted, too large, or the
        archive changed since it was listed).
    """
    try:
        archive = _open_zip(path)
        if index is None:
            info = archive.getinfo(member)
        else:
            entries = archive.infolist()
            if index >= len(entries) or entries[index].filename != member:
                raise OSError(f"entry {index} is no longer {member!r} (the zip changed?)")
            info = entries[index]
        reason = too_large(info.file_size)
        if reason:
            raise OSError(reason)
        with archive.open(info) as f:
            # Bounded: whatever the header says, never more than the cap plus one byte.
            data = f.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, KeyError, RuntimeError) as e:
        # Corrupt member or encrypted entry: an unreadable input, not a crash.
        raise OSError(f"cannot read zip member: {e}") from e
    if len(data) > MAX_MEMBER_BYTES:
        raise OSError(f"zip member too large: more than {MAX_MEMBER_BYTES} bytes uncompressed")
    return data
