"""What ``train`` prints while it fits: a live bar on a terminal, one line per epoch elsewhere.

Keras' ``verbose=2`` prints nothing until an epoch ends (two minutes on a CPU) and then
two lines; ``verbose=1`` shows no images/s, and off a terminal (a log file, CI) it prints
a new line at every update, every 0.05 s. So ``fit`` runs with ``verbose=0`` and
``EpochProgress`` prints:

* on a terminal (``progress_mode`` says ``"bar"``), a tqdm bar within each epoch,
  counting images, with the images/s rate and the running loss and accuracy;
* always, exactly one line when the epoch ends: time, train images/s (``Throughput``'s
  figure, which leaves out the first step and validation), the share of step time spent
  waiting for input, and the metrics.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

import keras
from tqdm import tqdm

# progress_mode's answers.
BAR = "bar"
LINES = "lines"
# The running batch metrics the bar shows.
_BAR_KEYS = ("loss", "accuracy")
# Epoch-log keys the line shows in words rather than as "name: value".
_SPECIAL_KEYS = ("train_images_per_sec", "input_wait_share", "input_wait_ms_per_step")


def progress_mode(stream: TextIO) -> str:
    """``"bar"`` when ``stream`` is a terminal, else ``"lines"`` (logs, CI, pipes)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return BAR if isatty is not None and isatty() else LINES
    except ValueError:  # A closed stream.
        return LINES


def epoch_line(epoch: int, epochs: int, seconds: float, logs: dict) -> str:
    """The one line printed at the end of an epoch (``epoch`` is 0-based)."""
    parts = [f"epoch {epoch + 1}/{epochs}", f"{seconds:.0f}s"]
    if logs.get("train_images_per_sec") is not None:
        parts.append(f"{logs['train_images_per_sec']:.0f} images/s")
    if logs.get("input_wait_share") is not None:
        parts.append(f"input wait {100 * logs['input_wait_share']:.0f}%")
    parts += [
        f"{key}: {float(value):.4f}" for key, value in logs.items() if key not in _SPECIAL_KEYS
    ]
    return " - ".join(parts)


class EpochProgress(keras.callbacks.Callback):
    """Prints a bar within each epoch (``mode="bar"``) and one line at its end.

    Put it after ``Throughput`` and ``InputWait`` in the callback list, so the epoch
    logs it prints hold their figures.
    """

    def __init__(self, global_batch_size: int, mode: str, stream: TextIO | None = None):
        super().__init__()
        if mode not in (BAR, LINES):
            raise ValueError(f"mode={mode!r}: expected {BAR!r} or {LINES!r}")
        self.global_batch_size = global_batch_size
        self.mode = mode
        self.stream = stream or sys.stdout
        self._bar = None
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if self.mode == BAR:
            steps = self.params.get("steps")
            # Not tqdm's own size query: a pseudo-terminal that reports 0 x 0 (docker -t,
            # script) gets no bar from it at all (its rows become -1, which hides every
            # bar); shutil falls back to $COLUMNS/$LINES or 80 x 24. Read per epoch, so a
            # resized window is followed.
            size = shutil.get_terminal_size()
            self._bar = tqdm(
                total=steps * self.global_batch_size if steps else None,
                desc=f"epoch {epoch + 1}/{self.params.get('epochs')}",
                unit="img",
                file=self.stream,
                leave=False,  # The epoch line replaces it.
                ncols=size.columns,
                nrows=size.lines,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(self.global_batch_size)
            shown = {k: f"{float(v):.3f}" for k, v in (logs or {}).items() if k in _BAR_KEYS}
            self._bar.set_postfix(shown, refresh=False)

    def on_test_begin(self, logs=None):
        if self._bar is not None:
            self._bar.set_postfix_str("validating", refresh=True)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        line = epoch_line(
            epoch, self.params.get("epochs"), time.perf_counter() - self._start, logs or {}
        )
        print(line, file=self.stream, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:  # Stopped within an epoch.
            self._bar.close()
            self._bar = None
