"""The conversion's workers: an ordered process-pool map (the progress bar is ``core.progress``).

Imports no TensorFlow: the pool is forked before any TF op runs, and the workers only
read and hash files (``records.inputs.sources.read_digest``, pass 1). Photos are
prepared in this process, on threads (``records.photo_batches``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Callable, Iterable, Iterator


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
    # every worker. Workers only read and hash files (records.inputs.sources).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(num_workers, initializer=_ignore_sigint) as pool:

        def pool_map(function, iterable):
            return pool.imap(function, iterable, chunksize=8)

        yield pool_map
