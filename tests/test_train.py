"""Tests for the `train` entry point (flags, errors, resume, output), run in this process
through ``conftest.run_command``; a subprocess only where a test needs one: a SIGKILL, and
logical CPU devices (they must be set before TensorFlow initialises, which this process
has done)."""

from __future__ import annotations

import json
import signal

import pandas as pd
import pytest

from conftest import (
    TINY_TRAIN_FLAGS,
    run_command,
    run_process,
    run_train,
    train_command,
    train_runner_command,
)
from trainer.models import model as model_lib

SMALL_FLAGS = TINY_TRAIN_FLAGS


def train(records_dir, model_dir, *flags):
    """``train`` in this process with SMALL_FLAGS + flags."""
    return run_train(records_dir, model_dir, *SMALL_FLAGS, *flags)


def train_in_a_process(records_dir, model_dir, *flags, command=train_command):
    """``command`` (``train`` itself, or tests/train_runner.py) with SMALL_FLAGS + flags in
    a process of its own."""
    return run_process(command(records_dir, model_dir, *SMALL_FLAGS, *flags))


@pytest.mark.slow
def test_flagfile_run(tiny_records, tmp_path):
    flagfile = tmp_path / "train.flags"
    flagfile.write_text("--epochs=1\n--steps_per_epoch=1\n")
    result = train(tiny_records, tmp_path / "model", f"--flagfile={flagfile}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["settings"]["epochs"] == 1 and metrics["steps_per_epoch"] == 1


def test_imagenet_download_failure_is_a_clear_error(tiny_records, tmp_path, monkeypatch):
    # The card's recipe on a machine offline: nothing listens on port 9, so the VGG16
    # download fails. (That a network that never answers cannot hang it: test_model's
    # socket-timeout test.) The Keras cache and the proxy are read when the download runs.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    result = run_command(
        "trainer.train",
        f"--records_dir={tiny_records}",
        f"--model_dir={tmp_path / 'model'}",
        "--recipe=vgg16",
        "--image_size=32",
        "--batch_size=8",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert model_lib.NOTOP_WEIGHTS_FILE in result.stderr
    assert str(tmp_path / "keras_home" / "models") in result.stderr
    assert "--weights=none" in result.stderr


@pytest.mark.parametrize(
    "flags, message, code",
    [
        (["--weights=/no/such/vgg16.h5"], "no such file", 2),
        (["--mixed_precision=fp8"], "--mixed_precision", 2),
        (["--backup_freq=often"], "--backup_freq=often", 2),
        # The old silent combination (fused decode + keras-cv in the model) is gone: one
        # --augment choice, and --augment_on no longer exists.
        (["--augment=fused", "--augment_on=model"], "Unknown command line flag 'augment_on'", 2),
        (["--augment=keras_cv"], "--augment=keras_cv", 2),
    ],
)
def test_bad_flags_give_clear_errors(tiny_records, tmp_path, flags, message, code):
    result = train(tiny_records, tmp_path / "model", *flags)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # A process of its own: two logical CPU devices.
def test_a_batch_that_replicas_cannot_share_is_a_clear_error(tiny_records, tmp_path):
    flags = ["--strategy=mirrored", "--num_cpu_devices=2", "--batch_size=3"]
    result = train_in_a_process(tiny_records, tmp_path / "model", *flags)
    assert result.returncode == 2
    assert "batch_size 3 is not divisible by 2 replicas" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_records_dir(tmp_path):
    result = train(tmp_path / "nothing", tmp_path / "model")
    assert result.returncode == 2
    assert "make_records" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # The kill needs a process of its own; the resume runs here.
def test_killed_run_resumes(tiny_records, tmp_path):
    model_dir = tmp_path / "model"
    # 3 epochs x 3 steps with a backup every 2 steps, SIGKILLed by tests/train_runner.py
    # after batch 2 of epoch 1 (0-based): mid-epoch, one epoch and a backup at batch 1
    # done. tests/test_resume.py kills at more points; this is the plain one-phase run,
    # resumed by the `train` command itself.
    flags = ["--epochs=3", "--steps_per_epoch=3", "--backup_freq=2", "--early_stopping_patience=0"]
    killed = train_in_a_process(
        tiny_records, model_dir, *flags, "--kill_at=0:1:2", command=train_runner_command
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (model_dir / "metrics.json").exists()
    assert pd.read_csv(model_dir / "history.csv")["epoch"].tolist() == [0]

    result = train(tiny_records, model_dir, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from the backup" in result.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert (metrics["resumed_from"]["epoch"], metrics["resumed_from"]["batch"]) == (1, 1)
    # Epochs finished before the kill are not run again: one row per epoch, in order.
    assert pd.read_csv(model_dir / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert metrics["epochs_completed"] == 3
    assert not (model_dir / "backup").exists()


@pytest.mark.slow
def test_not_a_terminal_gets_exactly_one_line_per_epoch(tiny_records, tmp_path):
    # stdout is no terminal here, as in a log file or CI: no bar, no carriage returns, and
    # nothing but the epoch lines (the logs go to stderr).
    result = train(tiny_records, tmp_path / "model", "--epochs=3", "--steps_per_epoch=2")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(" images/s - " in line and "val_accuracy: " in line for line in lines)
    assert "\r" not in result.stdout
