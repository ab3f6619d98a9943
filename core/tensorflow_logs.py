"""Quiet TensorFlow start-up: its C++ errors shown, its start-up noise not.

Importing TensorFlow 2.21 prints six C++ log lines (the oneDNN notice and "Could not
find cuda drivers", each after "WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR", twice: two libraries log them). ``TF_CPP_MIN_LOG_LEVEL``
does not hide them, at any level: they are written before TensorFlow reads it. On a host
without a CUDA driver the first device set-up then logs an ERROR that is none ("failed
call to cuInit": there is no driver to initialise). So ``install()``, run before anything
imports TensorFlow:

* defaults ``TF_CPP_MIN_LOG_LEVEL`` to 2 (``DEFAULT_LEVEL``: hide C++ INFO and WARNING
  lines, show ERROR and FATAL ones, which is how a failed op on a device or a corrupt file
  read by a C++ kernel shows), which TensorFlow's logging honours once it is loaded; a
  value the user set wins;
* wraps that import: the C++ lines written to stderr while TensorFlow loads go to a
  temporary file, and those at or above the level are written back, so nothing is lost at
  ``TF_CPP_MIN_LOG_LEVEL=0`` and nothing else printed then is dropped;
* where the import said there is no CUDA driver, does the same around the first device
  set-up, dropping the cuInit ERROR (``BENIGN_ERRORS``) at level 2 and above. A host with
  a driver is never wrapped there, so a GPU that fails to start shows its error.

The wrapper is an import hook (``sys.meta_path``) rather than one early
``import tensorflow``, so commands that do not need TensorFlow (``--help``, an export
that fails on a missing model) do not pay for loading it. Each package's ``__init__``
calls ``install()``: whichever a command imports first, it runs before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# 2: errors shown. (3 hid them too, and a real C++ error can be the only trace of a
# failure: a kernel that logs and returns an empty result, a device that fails to start.)
DEFAULT_LEVEL = "2"

# A C++ log line: severity letter, then the date (MMDD) or 0000 before absl's logging is
# initialised, e.g. "I0000 00:00:1796219582.689922    3711 port.cc:153] oneDNN ...",
# or TF's own format, "2025-01-01 12:00:00.000000: I tensorflow/...".
_LOG_LINE = re.compile(
    r"^(?:([IWEF])\d{4} \d\d:\d\d:|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) )"
)
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITIES = "IWEF"
# Below this level every line is shown as TensorFlow prints it (the user asked for them).
_ERRORS_ONLY = _SEVERITIES.index("E")
# What the import prints on a host without a CUDA driver (an INFO line).
_NO_CUDA_DRIVER = re.compile(r"\] Could not find cuda drivers on your machine")
# ERROR lines that are none on a host without a CUDA driver: the first device set-up
# still calls cuInit, which fails there ("UNKNOWN ERROR (303)" on this CPU host).
BENIGN_ERRORS = (re.compile(r"cuda_platform\.cc:\d+\] failed call to cuInit: "),)
# The eager context's methods whose first call sets up the devices (and calls cuInit):
# whichever a program calls first. Private TensorFlow names: where one is missing, that
# line is simply not hidden.
_DEVICE_SET_UP = ("ensure_initialized", "_initialize_physical_devices")


def min_level() -> int:
    """The C++ log level in effect: ``TF_CPP_MIN_LOG_LEVEL`` (0 shows everything)."""
    try:
        return int(os.environ.get(LEVEL_VARIABLE, DEFAULT_LEVEL))
    except ValueError:
        return 0


def filter_lines(text: str, level: int, benign: Sequence[re.Pattern] = ()) -> str:
    """Drops the C++ log lines below ``level`` (with their continuation lines).

    Args:
      text: What was written to stderr.
      level: 0 keeps all, 1 drops INFO, 2 also WARNING, 3 also ERROR.
      benign: Patterns of lines that are no errors, also dropped at level 2 and above.

    Returns:
      The rest, in order.
    """
    kept, keeping = [], True
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match:
            severity = match.group(1) or match.group(2)
            keeping = _SEVERITIES.index(severity) >= level and not (
                level >= _ERRORS_ONLY and any(pattern.search(line) for pattern in benign)
            )
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


@contextlib.contextmanager
def filtered_stderr(
    benign: Sequence[re.Pattern] = (), drop_if_failed: bool = False
) -> Iterator[list[str]]:
    """Sends file descriptor 2 to a temporary file; on exit writes back what passes
    ``filter_lines``. Yields a list that then holds the whole captured text.

    Args:
      benign: Patterns of ERROR lines that are none (``filter_lines``).
      drop_if_failed: Write nothing back if the body raises (a caller that reports the
        failure itself, in one line, instead of the C++ dump that came with it).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    captured_text: list[str] = []
    failed = False
    # A file, not a pipe: nothing reads while TensorFlow runs, and a full pipe would block.
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured_text
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            captured_text.append(captured.read().decode(errors="replace"))
            if not (failed and drop_if_failed):
                sys.stderr.write(filter_lines(captured_text[0], min_level(), benign))
            sys.stderr.flush()


def _quiet_first_device_set_up(context_class: type) -> None:
    """Filters stderr (``BENIGN_ERRORS``) during the first device set-up, then unwraps."""
    originals = {
        name: getattr(context_class, name)
        for name in _DEVICE_SET_UP
        if hasattr(context_class, name)
    }

    def restore() -> None:
        for name, original in originals.items():
            setattr(context_class, name, original)

    def first_call(original):
        @functools.wraps(original)
        def wrapper(self, *args, **kwargs):
            # Unwrapped before the call: later calls (ensure_initialized runs often) cost
            # nothing, and the one inside this call runs unwrapped under this capture.
            restore()
            with filtered_stderr(BENIGN_ERRORS):
                return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(context_class, name, first_call(original))


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader with stderr (file descriptor 2) going to a temporary file;
    without a CUDA driver, also wraps the first device set-up."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr() as captured_text:
            self._loader.exec_module(module)
        context = sys.modules.get("tensorflow.python.eager.context")
        if _NO_CUDA_DRIVER.search(captured_text[0]) and context is not None:
            _quiet_first_device_set_up(context.Context)


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
