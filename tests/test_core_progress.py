"""Tests for core/progress.py (the conversion's and feature passes' progress; named
apart from tests/test_progress.py, which tests trainer/training/progress.py)."""

from __future__ import annotations

from absl import logging

from core import progress


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_a_log_line_every_ten_seconds(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    lines = []
    monkeypatch.setattr(logging, "info", lambda message, *args: lines.append(message % args))
    bar = progress.Progress("writing", 40, enabled=False)
    bar.update(10)
    clock.now += progress._LOG_EVERY_S - 0.5
    bar.update(10)
    assert lines == []
    clock.now += 0.5
    bar.update(5)
    assert lines == [f"writing: 25/40 images ({25 / progress._LOG_EVERY_S:.1f} images/s)"]
    bar.update(15)
    assert len(lines) == 1  # the next line only 10 s after this one
    bar.close()


def test_on_request_a_tqdm_bar_counts_every_update(capsys):
    bar = progress.Progress("features", 3, enabled=True)
    for _ in range(3):
        bar.update()
    bar.close()
    err = capsys.readouterr().err
    assert "features" in err and "3/3" in err


def test_enabled_none_follows_whether_stderr_is_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    bar = progress.Progress("quiet", 2, enabled=None)
    bar.update(2)
    bar.close()
    assert "quiet" not in capsys.readouterr().err
