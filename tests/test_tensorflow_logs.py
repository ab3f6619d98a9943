"""Tests for core/tensorflow_logs.py: TensorFlow's C++ start-up noise hidden, its errors shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from core import tensorflow_logs

ONEDNN = (
    "I0000 00:00:1796219582.689922    3711 port.cc:153] oneDNN custom operations are on. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
)
CUDA = (
    "I0000 00:00:1796219582.690218    3711 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
)
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
WARNING = "W0000 00:00:1796219582.7    3711 x.cc:1] a warning\n"
ERROR = "E0000 00:00:1796219582.8    3711 tfrecord_reader.cc:7] corrupted record at 12\n"
CUINIT = (
    "E0000 00:00:1796652346.730107   28831 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
TF_FORMAT_INFO = (
    "2026-01-02 03:04:05.678901: I tensorflow/core/platform/cpu_feature_guard.cc:210] This "
    "TensorFlow binary is optimized to use available CPU instructions.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild.\n"
)
START = BANNER + ONEDNN + CUDA + WARNING + ERROR + TF_FORMAT_INFO


@pytest.mark.parametrize(
    "level, expected",
    [
        (0, START),
        (1, WARNING + ERROR),
        (2, ERROR),
        (3, ""),
    ],
)
def test_filter_keeps_the_lines_at_or_above_the_level(level, expected):
    assert tensorflow_logs.filter_lines(START, level) == expected


@pytest.mark.parametrize("level", [2, 3])
def test_filter_drops_the_benign_cuinit_error_but_not_an_unknown_one(level):
    text = CUINIT + ERROR
    expected = ERROR if level == 2 else ""
    assert tensorflow_logs.filter_lines(text, level, tensorflow_logs.BENIGN_ERRORS) == expected


@pytest.mark.parametrize("level", [0, 1])
def test_filter_shows_the_benign_lines_to_whoever_asks_for_info_or_warnings(level):
    text = CUINIT + ERROR
    assert tensorflow_logs.filter_lines(text, level, tensorflow_logs.BENIGN_ERRORS) == text


def test_filter_keeps_what_is_no_log_line():
    text = "a Python warning\n" + ONEDNN + "continued\n" + ERROR + "after the error\n"
    # A line after a dropped message continues it; one after a kept message is kept.
    assert (
        tensorflow_logs.filter_lines(text, 2) == "a Python warning\n" + ERROR + "after the error\n"
    )


# After the import: the first op sets up the devices (where a host without a CUDA driver
# logs the false cuInit ERROR), then a C++ kernel logs a real ERROR line.
_AFTER_IMPORT = (
    "tf.constant(1.0) + 1\n"
    "tf.print('planted error', output_stream=tf.compat.v1.logging.error, end='')\n"
)
PLANTED = "E logging_ops.cc:173] planted error"


def _import_tensorflow(hooked: bool, level: str | None, after: str = "") -> str:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    code = ("from core import tensorflow_logs; tensorflow_logs.install()\n" if hooked else "") + (
        "import tensorflow as tf\n" + after
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def _without_times(text: str) -> list[str]:
    # Timestamps and thread ids differ from run to run.
    return [re.sub(r"^(\w)\d{4} [\d:.]+ +\d+ ", r"\1 ", line) for line in text.splitlines()]


@pytest.mark.slow
def test_by_default_start_up_is_silent_and_a_cpp_error_shows():
    # The start-up lines (and, without a CUDA driver, the cuInit ERROR of the first op)
    # are hidden; the kernel's ERROR line is what is left.
    assert _without_times(_import_tensorflow(hooked=True, level=None, after=_AFTER_IMPORT)) == [
        PLANTED
    ]


@pytest.mark.slow
def test_a_level_the_user_sets_wins():
    # At 0 the user sees exactly what a plain import and first op print, in the same order;
    # at 3 not even the error.
    assert _without_times(
        _import_tensorflow(hooked=True, level="0", after=_AFTER_IMPORT)
    ) == _without_times(_import_tensorflow(hooked=False, level="0", after=_AFTER_IMPORT))
    assert _import_tensorflow(hooked=True, level="3", after=_AFTER_IMPORT) == ""


def test_install_is_idempotent_and_steps_aside_once_tensorflow_is_loaded(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    tensorflow_logs.uninstall()
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    tensorflow_logs.install()
    tensorflow_logs.install()
    hooks = [f for f in sys.meta_path if isinstance(f, tensorflow_logs._Finder)]
    assert len(hooks) == 1 and sys.meta_path[0] is hooks[0]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == tensorflow_logs.DEFAULT_LEVEL == "2"
    tensorflow_logs.uninstall()
    assert not any(isinstance(f, tensorflow_logs._Finder) for f in sys.meta_path)
