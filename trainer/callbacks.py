"""The callbacks a training run uses: stock Keras ones plus a throughput meter."""

from __future__ import annotations

import importlib.util
import json
import os
import time

import keras
from absl import logging

BACKUP_SUBDIR = "backup"
BEST_MODEL_NAME = "best.keras"
HISTORY_NAME = "history.csv"


class Throughput(keras.callbacks.Callback):
    """Measures training images/s per epoch and adds `train_images_per_sec` to the logs.

    The clock starts at the end of each epoch's first batch, so graph tracing and the
    input pipeline's warm-up do not count, and stops at the end of the last training
    batch, so validation does not count either.
    """

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.per_epoch: list[float] = []
        self._start = None
        self._steps = 0
        self._last = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps, self._last = None, 0, None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        else:
            self._steps += 1
            self._last = now

    def on_epoch_end(self, epoch, logs=None):
        if self._steps and self._last > self._start:
            rate = self._steps * self.global_batch_size / (self._last - self._start)
            self.per_epoch.append(rate)
            if logs is not None:
                logs["train_images_per_sec"] = rate
            logging.info("epoch %d: %.1f train images/s", epoch + 1, rate)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, with the epoch it records during a resumed epoch fixed.

    Keras 3.15 sets the epoch it writes into its metadata only at epoch ends, so a
    mid-epoch backup (save_freq=<steps>) taken in the first epoch after a resume records
    epoch 0, and a second interruption would restart the count from scratch.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch


class InferenceModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves `inference_model` rather than the model being fit.

    When augmentation layers wrap the model (--augment=keras_cv_model), the best checkpoint
    should still be the plain model that predicts without them.
    """

    def __init__(self, inference_model: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inference_model = inference_model

    def set_model(self, model):
        super().set_model(self._inference_model)


def _tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def read_backup_state(backup_dir: str) -> dict | None:
    """The epoch/batch BackupAndRestore last saved in `backup_dir`, or None if none."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def make_callbacks(
    *,
    write_dir: str,
    backup_dir: str,
    inference_model: keras.Model,
    global_batch_size: int,
    backup_freq: str | int,
    early_stopping_patience: int,
    append_history: bool,
    tensorboard: bool = True,
) -> tuple[list[keras.callbacks.Callback], Throughput, keras.callbacks.ModelCheckpoint]:
    """Builds the run's callbacks.

    Args:
      write_dir: Where checkpoints, history and TensorBoard logs go (a temporary
        directory on non-chief workers).
      backup_dir: BackupAndRestore's directory (kept per worker; each restores its own).
      inference_model: The model the best checkpoint saves.
      global_batch_size: For the images/s figure.
      backup_freq: "epoch" or a number of steps between backups (mid-epoch backups).
      early_stopping_patience: Epochs without val_accuracy improving; 0 disables.
      append_history: Append to an existing history CSV (when resuming).
      tensorboard: Whether to write TensorBoard logs.

    Returns:
      (callbacks in order, the throughput meter, the best-model checkpoint).
    """
    throughput = Throughput(global_batch_size)
    best = InferenceModelCheckpoint(
        inference_model,
        os.path.join(write_dir, BEST_MODEL_NAME),
        monitor="val_accuracy",
        mode="max",
        save_best_only=True,
    )
    callbacks = [
        # First, so the epoch it restores is in place before the others start counting.
        BackupAndRestore(backup_dir, save_freq=backup_freq),
        throughput,
        best,
        # After Throughput, so the CSV gets its train_images_per_sec column.
        keras.callbacks.CSVLogger(os.path.join(write_dir, HISTORY_NAME), append=append_history),
    ]
    if early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                mode="max",
                patience=early_stopping_patience,
                restore_best_weights=False,
            )
        )
    if tensorboard and _tensorboard_installed():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, "tensorboard")))
    elif tensorboard:
        # TensorFlow no longer depends on the tensorboard package, and the callback fails
        # at the first summary without it.
        logging.warning(
            "TensorBoard logs skipped: the tensorboard package is not installed "
            "(pip install tensorboard to get them, or pass --notensorboard to silence this)"
        )
    return callbacks, throughput, best
