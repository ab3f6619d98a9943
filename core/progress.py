"""Progress of a long loop over items: a tqdm bar on a terminal, else a log line now and then.

Used by the conversion (``records.writer``), the feature passes (``trainer.training.features``,
``trainer.audit.features``). Training's per-epoch progress is a Keras callback of its own
(``trainer.training.progress``).
"""

from __future__ import annotations

import sys
import time

from absl import logging

_LOG_EVERY_S = 10.0


class Progress:
    """tqdm on a terminal; otherwise an absl log line every ``_LOG_EVERY_S`` seconds.

    Args:
      what: What is being done (the bar's title, the log line's start).
      total: How many items there are.
      enabled: True for a bar, False for log lines, None for a bar on a terminal only.
    """

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
