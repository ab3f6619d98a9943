"""The conversion's workers and progress: an ordered process-pool map and a progress bar.

Imports no TensorFlow: the pool is forked before any TF op runs, and workers only run
Pillow/hashlib code (``records.images``, ``records.sources``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from absl import logging

_LOG_EVERY_S = 10.0


class Progress:
    """tqdm on a terminal; otherwise an absl log line every ``_LOG_EVERY_S`` seconds."""

    def __init__(self, what: str, total: int, enabled: bool | None):
        self._what, self._total, self._done = what, total, 0
        self._start = self._last_log = time.monotonic()
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit="img", dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        self._done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            logging.info(
                "%s: %d/%d images (%.1f images/s)",
                self._what,
                self._done,
                self._total,
                self._done / max(now - self._start, 1e-9),
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group; only the parent should handle it, so the
    # workers don't each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def mapper(num_workers: int) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """An ordered, lazy ``map``: a process pool, or the builtin for one worker."""
    if num_workers == 1:
        yield map
        return
    # fork where available: spawn would re-import the entry module (and TensorFlow) in
    # every worker. Workers only run Pillow/hashlib code (records.images/sources).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(num_workers, initializer=_ignore_sigint) as pool:

        def pool_map(function, iterable):
            return pool.imap(function, iterable, chunksize=8)

        yield pool_map
