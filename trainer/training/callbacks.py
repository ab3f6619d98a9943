"""The callbacks a training run uses, in order: stock Keras ones, throughput and input-wait
meters, and (from ``resume``) the best-model checkpoint and the backup that commits them."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import logging

from trainer.models.files import BEST_MODEL_NAME, HISTORY_NAME
from trainer.training import progress, resume

BACKUP_SUBDIR = "backup"


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


class InputWait(keras.callbacks.Callback):
    """Measures the share of training-step time spent waiting for input, per epoch.

    Adds ``input_wait_share`` (0..1) and ``input_wait_ms_per_step`` to the epoch logs, so
    they reach history.csv, metrics.json and TensorBoard (``epoch_input_wait_share``).
    Near 0: the input keeps up; a large share: the run is input-bound (see
    ``benchmark_train``, decode-once input and the tf.data service).

    How: Keras' TensorFlow train function normally takes the next batch inside the
    compiled step (``iterator.get_next()`` in the graph), where waiting cannot be timed
    apart from computing. At ``on_train_begin`` (``fit`` has built the train function,
    no step has run) this callback wraps it: the wrapper takes the step's batch from the
    distributed iterator in Python, timing that ``next()``, and hands the batch to the
    same compiled step through Keras' own path for already-fetched data (a list of
    batches). The time in ``next()`` is exactly the time the loop is blocked on the
    pipeline with its prefetch buffer empty. The step time is from that ``next()`` to
    ``on_train_batch_end``; Keras converts each step's logs to numbers before calling
    batch-end callbacks (this one defines it, so it is never dispatched asynchronously),
    so the step's device work is finished by then and wait / step time is the share of
    time the accelerator had nothing to do for lack of input. The first step of each
    ``fit`` (tracing, XLA compilation) is left out. Cost: one eager ``get_next`` per step
    (~0.1 ms). Under TPUStrategy, where the batch must be fetched inside the step, it
    measures nothing. The original train function is put back at ``on_train_end``.
    """

    def __init__(self):
        super().__init__()
        self.per_epoch: list[float] = []
        self._inner = None
        self._skip_first = True
        self._reset()

    def _reset(self):
        self._wait = self._step_time = 0.0
        self._steps = 0
        self._step_start = self._step_wait = None

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        if isinstance(strategy, tf.distribute.TPUStrategy) or self.model.train_function is None:
            return
        inner = self._inner = self.model.train_function
        self._skip_first = True

        def timed_train_function(iterator):
            if not isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                return inner(iterator)
            start = time.perf_counter()
            batches = []
            for _ in range(self.model.steps_per_execution):
                try:
                    batches.append(next(iterator))
                except (StopIteration, tf.errors.OutOfRangeError):
                    break
            if not batches:
                raise StopIteration
            self._step_start = start
            self._step_wait = time.perf_counter() - start
            # A list is not a tf.data iterator: Keras runs its compiled step on each item.
            return inner(batches)

        self.model.train_function = timed_train_function

    def on_train_batch_end(self, batch, logs=None):
        if self._step_start is None:
            return
        if self._skip_first:
            self._skip_first = False
        else:
            self._wait += self._step_wait
            self._step_time += time.perf_counter() - self._step_start
            self._steps += 1
        self._step_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        if not self._steps or self._step_time <= 0:
            return
        share = self._wait / self._step_time
        self.per_epoch.append(share)
        if logs is not None:
            logs["input_wait_share"] = share
            logs["input_wait_ms_per_step"] = 1000 * self._wait / self._steps
        logging.info(
            "epoch %d: %.1f%% of step time waiting for input (%.1f ms of %.1f ms per step)%s",
            epoch + 1,
            100 * share,
            1000 * self._wait / self._steps,
            1000 * self._step_time / self._steps,
            ": input-bound" if share > 0.1 else "",
        )

    def on_train_end(self, logs=None):
        if self._inner is not None:
            self.model.train_function = self._inner
            self._inner = None


def _tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def make_callbacks(
    *,
    write_dir: str,
    backup_dir: str,
    phase: int,
    inference_model: keras.Model,
    global_batch_size: int,
    backup_freq: str | int,
    early_stopping_patience: int,
    append_history: bool,
    tensorboard: bool = True,
    progress_mode: str = progress.LINES,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[list[keras.callbacks.Callback], Throughput, keras.callbacks.ModelCheckpoint]:
    """Builds the run's callbacks.

    Args:
      write_dir: Where checkpoints, history and TensorBoard logs go (a temporary
        directory on non-chief workers).
      backup_dir: BackupAndRestore's directory (kept per worker; each restores its own).
      phase: Which phase of the run (0 or 1) this ``fit`` is, for its backups.
      inference_model: The model the best checkpoint saves.
      global_batch_size: For the images/s figure.
      backup_freq: "epoch" or a number of steps between backups (mid-epoch backups).
      early_stopping_patience: Epochs without val_accuracy improving; 0 disables.
      append_history: Append to an existing history CSV (when resuming).
      tensorboard: Whether to write TensorBoard logs.
      progress_mode: ``progress.BAR`` (a bar within each epoch) or ``progress.LINES``;
        either way one line per epoch (``progress.EpochProgress``).
      extra_callbacks: The caller's own callbacks, placed after the run's and before the
        backup (see ``fit.train``).

    Returns:
      (callbacks in order, the throughput meter, the best-model checkpoint).
    """
    throughput = Throughput(global_batch_size)
    best = resume.InferenceModelCheckpoint(
        inference_model,
        os.path.join(write_dir, BEST_MODEL_NAME),
        monitor="val_accuracy",
        mode="max",
        save_best_only=True,
    )
    callbacks = [
        throughput,
        # Before CSVLogger and TensorBoard, so they get its input_wait_share.
        InputWait(),
        best,
        # After Throughput, so the CSV gets its train_images_per_sec column.
        keras.callbacks.CSVLogger(os.path.join(write_dir, HISTORY_NAME), append=append_history),
        # After Throughput and InputWait, so its epoch line has their figures.
        progress.EpochProgress(global_batch_size, progress_mode),
    ]
    early_stopping = None
    if early_stopping_patience > 0:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            mode="max",
            patience=early_stopping_patience,
            restore_best_weights=False,
        )
        callbacks.append(early_stopping)
    if tensorboard and _tensorboard_installed():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, "tensorboard")))
    elif tensorboard:
        # TensorFlow no longer depends on the tensorboard package, and the callback fails
        # at the first summary without it.
        logging.warning(
            "TensorBoard logs skipped: the tensorboard package is not installed "
            "(pip install tensorboard to get them, or pass --notensorboard to silence this)"
        )
    # After the others, so they see each epoch's complete logs (history row written, best
    # score and patience updated); before the backup, which commits what they did.
    callbacks.extend(extra_callbacks)
    # Last: at an epoch end it commits the state the others have just updated (history
    # row, best score, patience), and at train begin it restores theirs after
    # EarlyStopping's own reset (see resume.BackupAndRestore).
    callbacks.append(
        resume.BackupAndRestore(
            backup_dir,
            phase=phase,
            save_freq=backup_freq,
            checkpoint=best,
            early_stopping=early_stopping,
        )
    )
    return callbacks, throughput, best
