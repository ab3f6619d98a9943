"""Tests for trainer/training/progress.py: a bar on a terminal, exactly one line per epoch
elsewhere."""

from __future__ import annotations

import io
import os
import re
import sys
import threading

import keras
import numpy as np

from trainer.training import callbacks as callbacks_lib
from trainer.training import progress


def test_terminal_gets_a_bar_anything_else_one_line_per_epoch(tmp_path):
    primary, secondary = os.openpty()  # a real terminal device
    try:
        with open(secondary, "w") as terminal:
            assert progress.progress_mode(terminal) == progress.BAR
    finally:
        os.close(primary)
    with open(tmp_path / "log.txt", "w") as log_file:
        assert progress.progress_mode(log_file) == progress.LINES
    assert progress.progress_mode(io.StringIO()) == progress.LINES
    closed = io.StringIO()
    closed.close()
    assert progress.progress_mode(closed) == progress.LINES


def _fit(mode: str, stream, epochs: int = 2, steps: int = 3) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4 * steps, 8, 8, 3)).astype("float32")
    labels = np.arange(4 * steps) % 2
    model.fit(
        images,
        labels,
        batch_size=4,
        epochs=epochs,
        validation_data=(images[:4], labels[:4]),
        callbacks=[callbacks_lib.Throughput(4), progress.EpochProgress(4, mode, stream)],
        verbose=0,
    )


def test_lines_mode_prints_one_line_per_epoch_with_the_figures():
    stream = io.StringIO()
    _fit(progress.LINES, stream, epochs=3)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    for number, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {number}/3 - ")
        assert re.search(r" - \d+ images/s - ", line)
        assert "loss: " in line and "val_accuracy: " in line
    assert "\r" not in stream.getvalue()


def test_bar_mode_draws_a_bar_with_images_per_second_then_the_epoch_line():
    stream = io.StringIO()
    _fit(progress.BAR, stream, epochs=2)
    output = stream.getvalue()
    # tqdm redraws with carriage returns; the epoch lines end with newlines.
    assert "img/s" in output and "\r" in output
    assert "/12 [" in output  # 3 steps x 4 images
    lines = [line.split("\r")[-1] for line in output.split("\n") if line.split("\r")[-1]]
    assert [line.split(" - ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_bar_shows_on_a_terminal_that_reports_no_size(monkeypatch):
    # A fresh pseudo-terminal reports 0 x 0, as under `docker -t` or `script`; tqdm's own
    # size query then hid the bar completely.
    primary, secondary = os.openpty()
    received = []

    def drain():  # Read while the fit writes, so a full terminal buffer never blocks it.
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                return
            if not data:
                return
            received.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with open(secondary, "w", encoding="utf-8") as terminal:
        monkeypatch.setattr(sys, "stdout", terminal)
        assert progress.progress_mode(sys.stdout) == progress.BAR
        _fit(progress.progress_mode(sys.stdout), None, epochs=2)
        terminal.flush()
    reader.join(timeout=30)
    os.close(primary)
    output = b"".join(received).decode("utf-8", "replace")
    assert "img/s" in output and "/12 [" in output
    assert output.count("epoch 2/2 - ") == 1
