"""Quiet TensorFlow start-up: no C++ INFO/WARNING lines unless the user asks for them.

Importing TensorFlow 2.21 prints six C++ log lines (the oneDNN notice and "Could not
find cuda drivers", each after "WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR", twice: two libraries log them). ``TF_CPP_MIN_LOG_LEVEL``
does not hide them, at any level: they are written before TensorFlow reads it. So
``install()`` does two things, before anything imports TensorFlow:

* it defaults ``TF_CPP_MIN_LOG_LEVEL`` to 3 (hide C++ INFO, WARNING and ERROR lines; see
  ``DEFAULT_LEVEL``), which TensorFlow's logging honours once it is loaded; a value the
  user set wins;
* it wraps that import: the C++ lines written to stderr while TensorFlow loads go to a
  temporary file, and those at or above the level are written back, so nothing is
  lost at ``TF_CPP_MIN_LOG_LEVEL=0`` and nothing else printed then is dropped.

The wrapper is an import hook (``sys.meta_path``) rather than one early
``import tensorflow``, so commands that do not need TensorFlow (``--help``, an export
that fails on a missing model) do not pay for loading it. Each package's ``__init__``
calls ``install()``: whichever a command imports first, it runs before TensorFlow loads.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# 3, not 2: on a CPU-only host TensorFlow 2.21 logs two C++ ERROR lines on every run that
# are no errors ("failed call to cuInit" with no GPU driver, "oneDNN supports DT_UINT8
# only on platforms with AVX-512"); a real failure raises a Python exception with its
# message. TF_CPP_MIN_LOG_LEVEL=2 (or lower) shows them again.
DEFAULT_LEVEL = "3"

# A C++ log line: severity letter, then the date (MMDD) or 0000 before absl's logging is
# initialised, e.g. "I0000 00:00:1796219582.689922    3711 port.cc:153] oneDNN ...",
# or TF's own format, "2025-01-01 12:00:00.000000: I tensorflow/...".
_LOG_LINE = re.compile(
    r"^(?:([IWEF])\d{4} \d\d:\d\d:|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )"
)
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITIES = "IWEF"


def min_level() -> int:
    """The C++ log level in effect: ``TF_CPP_MIN_LOG_LEVEL`` (0 shows everything)."""
    try:
        return int(os.environ.get(LEVEL_VARIABLE, DEFAULT_LEVEL))
    except ValueError:
        return 0


def filter_lines(text: str, level: int) -> str:
    """Drops the C++ log lines below ``level`` (with their continuation lines).

    Args:
      text: What was written to stderr.
      level: 0 keeps all, 1 drops INFO, 2 also WARNING, 3 also ERROR.

    Returns:
      The rest, in order.
    """
    kept, keeping = [], True
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match:
            severity = match.group(1) or match.group(2)
            keeping = _SEVERITIES.index(severity) >= level
        elif line.rstrip("\n") == _BANNER:
            # A preamble to the lines after it: shown only when every line is.
            keeping = level == 0
            if not keeping:
                continue
        # Any other line continues the message before it (C++ messages may span lines),
        # or is not a log line at all (then ``keeping`` is still True).
        if keeping:
            kept.append(line)
    return "".join(kept)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader with stderr (file descriptor 2) going to a temporary file."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        # A file, not a pipe: nothing reads while TensorFlow loads, and a full pipe
        # would block the import.
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self._loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                sys.stderr.write(
                    filter_lines(captured.read().decode(errors="replace"), min_level())
                )
                sys.stderr.flush()


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first ``import tensorflow``, then steps aside."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Defaults the C++ log level and quiets the next ``import tensorflow``.

    Does nothing to the import when TensorFlow is already loaded; idempotent.
    """
    os.environ.setdefault(LEVEL_VARIABLE, DEFAULT_LEVEL)
    if "tensorflow" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())


def uninstall() -> None:
    """Removes the import hook (if installed)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
