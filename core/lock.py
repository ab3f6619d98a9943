"""One conversion at a time per output folder: an exclusive ``flock`` on a lock file.

Two ``make_records`` runs into the same ``--output_dir`` would share temp names, delete
each other's temp files and could record the sha256 of a shard still being written. So
``records.writer`` holds ``DirectoryLock`` for the whole conversion; a second run finds
it taken and stops at once, naming the holder's pid (written into the lock file).

The lock is the kernel's (``fcntl.flock``), so it is released when its holder exits,
however it exits (SIGKILL included): a stale lock file never blocks a rerun. The file
is removed when the lock is released normally; see ``_acquire`` for why that is safe.
"""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = ".make_records.lock"


class Held(Exception):
    """Another process holds the lock.

    Attributes:
      pid: The holder's process id, or None if it could not be read.
    """

    def __init__(self, pid: int | None):
        super().__init__(f"held by pid {pid}")
        self.pid = pid


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None  # The holder has not written its pid yet.


def _acquire(path: str) -> int:
    """Opens and locks ``path``; returns the descriptor.

    Raises:
      Held: If another process holds the lock.
      OSError: If the lock file cannot be created or locked.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise Held(pid) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder removes the file (still locked) before releasing it. If
        # that happened between our open and our flock, we now hold a lock on a deleted
        # file, which guards nothing: start again with a fresh file.
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            on_disk = None
        opened = os.fstat(fd)
        if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (
            opened.st_dev,
            opened.st_ino,
        ):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


class DirectoryLock:
    """Context manager holding ``<directory>/.make_records.lock`` exclusively.

    Raises (on entry):
      Held: If another process holds it.
    """

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        self._fd = _acquire(self.path)
        return self

    def __exit__(self, *exc_info) -> None:
        # Remove while still holding the lock, then release (see ``_acquire``).
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
