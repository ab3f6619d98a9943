"""One run at a time per output folder: an exclusive ``flock`` on a lock file.

Two runs writing into the same folder would overwrite each other's files half-way: two
``make_records`` runs share temp names and could record the sha256 of a shard still
being written; two ``train`` runs would resume from each other's backups. So every
command holds ``DirectoryLock`` on the folder it writes (``make_records`` its
--output_dir, ``train`` its --model_dir, ``export_model`` and ``audit_labels`` their
--output_dir) for the whole run; a second run finds it taken and stops at once, naming
the holder's command and pid (written into the lock file).

The lock is the kernel's (``fcntl.flock``), so it is released when its holder exits,
however it exits (SIGKILL included): a stale lock file never blocks a rerun. The file
is removed when the lock is released normally; see ``_acquire`` for why that is safe.
"""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = ".lock"


class LockError(ValueError):
    """The folder cannot be locked for this run; the message says why and what to do."""


class Held(LockError):
    """Another process holds the lock.

    Attributes:
      pid: The holder's process id, or None if it could not be read.
      command: The holder's command (``train`` ...), or None if it could not be read.
    """

    def __init__(self, message: str, pid: int | None, command: str | None):
        super().__init__(message)
        self.pid = pid
        self.command = command


def _holder(fd: int) -> tuple[int | None, str | None]:
    """(pid, command) that the holder wrote into the lock file."""
    try:
        lines = os.pread(fd, 256, 0).decode().split("\n")
        return int(lines[0]), (lines[1].strip() or None) if len(lines) > 1 else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None, None  # The holder has not written them yet.


def _acquire(path: str, command: str) -> int:
    """Opens and locks ``path``; returns the descriptor.

    Raises:
      BlockingIOError: If another process holds the lock (read its pid from the file).
      OSError: If the lock file cannot be created or locked.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
            os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode(), 0)
            return fd
        os.close(fd)


def _remove_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # Not empty (the run wrote something) or already gone.


class DirectoryLock:
    """Context manager holding a folder's lock file exclusively for one run.

    Creates the folder if it does not exist; a run that made it and wrote nothing into
    it (it failed early, e.g. on a missing input) removes it again on exit.

    Args:
      directory: The folder the run writes.
      command: This run's command (``train``), written into the lock file for the
        message another run shows.
      flag: The flag that names the folder (``--model_dir``), for messages.
      name: The lock file's name (several processes of one run that each write their
        own files, like multi-worker training, each take a lock of their own).
      beside: Keep the lock file beside the folder (``.<folder name>.lock`` in its
        parent) rather than in it: for a folder that is replaced whole at the end of the
        run (``export_model`` renames a finished staging folder into place, which would
        take a lock file inside it along), or removed by ``--overwrite``.

    Raises (on entry):
      Held: If another process holds it.
      LockError: If ``directory`` exists and is not a folder.
    """

    def __init__(
        self,
        directory: str,
        *,
        command: str,
        flag: str,
        name: str = LOCK_NAME,
        beside: bool = False,
    ):
        self.directory = directory
        self._command, self._flag = command, flag
        if beside:
            parent, folder = os.path.split(os.path.abspath(directory))
            self.path = os.path.join(parent, f".{folder}{name}")
            self._lock_dir = parent
        else:
            self.path = os.path.join(directory, name)
            self._lock_dir = directory
        self._fd: int | None = None
        self._made: list[str] = []

    def __enter__(self) -> DirectoryLock:
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise LockError(f"{self._flag} {self.directory!r} exists and is not a directory")
        self._made = _missing_parents(self._lock_dir)
        os.makedirs(self._lock_dir, exist_ok=True)
        try:
            self._fd = _acquire(self.path, self._command)
        except BlockingIOError:
            self._remove_made()
            pid, command = self._read_holder()
            holder = f"another {command or 'command'} run (pid {pid or 'unknown'})"
            raise Held(
                f"{self._flag} {self.directory} is in use by {holder}; wait for it to "
                f"finish or use another {self._flag}",
                pid,
                command,
            ) from None
        except BaseException:
            self._remove_made()
            raise
        return self

    def _read_holder(self) -> tuple[int | None, str | None]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None, None
        try:
            return _holder(fd)
        finally:
            os.close(fd)

    def _remove_made(self) -> None:
        for path in self._made:  # Innermost first.
            _remove_if_empty(path)

    def __exit__(self, *exc_info) -> None:
        # Remove while still holding the lock, then release (see ``_acquire``).
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        self._remove_made()


def _missing_parents(directory: str) -> list[str]:
    """The folders ``os.makedirs(directory)`` would create, innermost first."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing
