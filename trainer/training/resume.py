"""What a killed run needs to resume as the run it was: backups that hold the run's state.

Keras' ``BackupAndRestore`` backs up the weights, the optimizer and the epoch, and deletes
its backup when ``fit`` returns. A run resumed from that alone is not the run that was
interrupted: the best score behind best.keras is lost (the first epoch after a resume
overwrites best.keras, even a worse one), EarlyStopping's patience restarts, history.csv
keeps the rows of epochs that are then run again, and a kill between the end of phase one
and phase two's first backup restarts phase one. ``BackupAndRestore`` here adds that run
state to every backup and puts it back, and writes best.keras (``InferenceModelCheckpoint``)
only once the epoch is committed; ``fit.train`` picks the phase to resume in
(``read_backup_state``), drops the rows of repeated epochs (``truncate_history``) and
deletes the backups once the whole run is done.
"""

from __future__ import annotations

import csv
import json
import os

import keras
from absl import logging

from core import files

# Keras' own metadata file; Keras reads only its "epoch" key, the rest is the run state.
METADATA_NAME = "training_metadata.json"
_WEIGHTS_PREFIX = "backup-"
_WEIGHTS_SUFFIX = ".weights.h5"


def _number(value) -> float | None:
    # Monitored values arrive as Python or NumPy floats; float32 -> float is exact, so a
    # restored best compares with later values exactly as the original did.
    return None if value is None else float(value)


def callback_state(
    checkpoint: InferenceModelCheckpoint,
    early_stopping: keras.callbacks.EarlyStopping | None,
) -> dict:
    """The state of the best-model checkpoint and EarlyStopping that a resume restores."""
    return {
        "best": {
            "value": _number(checkpoint.best),
            "epoch": checkpoint.best_epoch,
        },
        "early_stopping": None
        if early_stopping is None
        else {
            "wait": early_stopping.wait,
            "best": _number(early_stopping.best),
            "best_epoch": early_stopping.best_epoch,
            "stopped_epoch": early_stopping.stopped_epoch,
        },
    }


def read_backup_state(backup_dir: str) -> dict | None:
    """The state the last backup in ``backup_dir`` committed, or None if there is none.

    Keys: ``epoch`` (the epoch a resumed ``fit`` starts at, i.e. epochs done), ``batch``,
    ``phase``, ``weights_file``, ``epoch_end`` (taken at an epoch end rather than
    mid-epoch), ``stop_training`` (the phase stopped early), ``best`` and
    ``early_stopping`` (see ``callback_state``).
    """
    path = os.path.join(backup_dir, METADATA_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class InferenceModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that saves `inference_model` rather than the model being fit.

    When augmentation layers wrap the model (--augment=keras_cv_model), the best checkpoint
    should still be the plain model that predicts without them.

    It decides at each epoch end (updating ``best`` and ``best_epoch``) but writes the
    file only when ``BackupAndRestore`` calls ``save_pending`` after committing the
    epoch: written before the commit, a kill in between would leave best.keras holding
    an epoch that the resumed run repeats and history.csv no longer lists. (So the two
    live in one module: neither works without the other.)
    """

    def __init__(self, inference_model: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inference_model = inference_model
        self.best_epoch: int | None = None  # 0-based epoch of `best`.
        self._pending = False

    def set_model(self, model):
        super().set_model(self._inference_model)

    def _save_model(self, epoch, batch, logs):
        if self._should_save_model(epoch, batch, logs, self.filepath):
            self.best_epoch = epoch
            self._pending = True

    def save_pending(self) -> None:
        """Writes the checkpoint if the epoch that just ended improved on the best."""
        if self._pending:
            self.save_now()
            self._pending = False

    def save_now(self) -> None:
        """Writes the model as it is now to ``filepath``."""
        # Under a temporary name first, so best.keras is never a half-written file
        # (Keras saves only to a name ending in .keras).
        with files.atomic_write(self.filepath, extension=".keras") as temporary:
            self.model.save(temporary, overwrite=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, extended to back up and restore the whole run's state.

    Each backup is one commit: the weights and optimizer go to a new file
    (``backup-<n>.weights.h5``), then ``training_metadata.json``, which names that file
    and holds Keras' epoch and batch plus the run state (``callback_state``, the phase,
    whether EarlyStopping stopped it), replaces the old one atomically, then the older
    weights file is deleted. A kill at any point leaves either the previous backup or the
    new one whole. (Keras writes one weights file in place, so a kill while it is being
    written loses the only backup.)

    It must be the last callback (``make_callbacks``): at an epoch end the others have
    then written the history row and updated the best score and the patience that the
    commit records; at train begin it restores their state after EarlyStopping's own
    reset. A backup is taken at every epoch end, whatever ``save_freq``, so every
    epoch's state is committed. After the commit it has ``checkpoint`` write best.keras
    (``InferenceModelCheckpoint.save_pending``): a kill between the commit and that
    write is repaired on restore, where the restored weights are the best epoch's.

    The backup is kept when ``fit`` returns (``fit.train`` removes them once the whole
    run is done), so a kill between phase one's end and phase two's first backup resumes
    phase one's backup, which restores its final weights and runs no epoch, and goes on
    to phase two.

    Also fixes the epoch a mid-epoch backup records in the first epoch after a resume:
    Keras 3.15 updates it only at epoch ends, so it would record epoch 0.
    """

    def __init__(
        self,
        backup_dir: str,
        *,
        phase: int,
        save_freq: str | int,
        checkpoint: InferenceModelCheckpoint,
        early_stopping: keras.callbacks.EarlyStopping | None,
    ):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.phase = phase
        self._checkpoint = checkpoint
        self._early_stopping = early_stopping
        self._backup_number = 0
        self._metadata_path = os.path.join(backup_dir, METADATA_NAME)

    def on_train_begin(self, logs=None):
        # Keras sets model._initial_epoch when it restores and never clears it: the epoch
        # phase one resumed at would otherwise also be where phase two's fit starts.
        self.model._initial_epoch = None
        state = read_backup_state(self.backup_dir)
        if state is None:
            return
        if "weights_file" not in state:
            # A backup of Keras' own format (weights and epoch only).
            super().on_train_begin(logs)
            return
        self._weights_path = os.path.join(self.backup_dir, state["weights_file"])
        if not os.path.isfile(self._weights_path):
            raise FileNotFoundError(
                f"{self._metadata_path} names {state['weights_file']}, which is missing; "
                f"delete {self.backup_dir} to run this phase again from its start"
            )
        super().on_train_begin(logs)  # Weights, optimizer state, model._initial_epoch.
        self._backup_number = state["backup_number"]
        self._restore_callbacks(state)
        if state["stop_training"]:
            # EarlyStopping had ended this phase: run none of its remaining epochs.
            self.model._initial_epoch = self.params["epochs"]
        if state["epoch_end"] and state["best"]["epoch"] == state["epoch"] - 1:
            # The restored weights are the best epoch's, and the kill may have come
            # between the commit and best.keras being written: write it (again).
            self._checkpoint.save_now()

    def _restore_callbacks(self, state: dict) -> None:
        self._checkpoint.best = state["best"]["value"]
        self._checkpoint.best_epoch = state["best"]["epoch"]
        saved, early_stopping = state["early_stopping"], self._early_stopping
        if saved is not None and early_stopping is not None:
            early_stopping.wait = saved["wait"]
            early_stopping.best = saved["best"]
            early_stopping.best_epoch = saved["best_epoch"]
            early_stopping.stopped_epoch = saved["stopped_epoch"]

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        self._batches_seen_since_last_saving = 0
        self._save_model(epoch_end=True)
        self._checkpoint.save_pending()

    def on_train_end(self, logs=None):
        pass  # Kept for a resume until the whole run is done (see the class docstring).

    def _save_model(self, epoch_end: bool = False):
        os.makedirs(self.backup_dir, exist_ok=True)
        self._backup_number += 1
        weights_file = f"{_WEIGHTS_PREFIX}{self._backup_number:06d}{_WEIGHTS_SUFFIX}"
        self.model.save_weights(os.path.join(self.backup_dir, weights_file))
        state = {
            # Keras' keys: the epoch a resumed fit starts at, the last batch backed up.
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "phase": self.phase,
            "weights_file": weights_file,
            "backup_number": self._backup_number,
            "epoch_end": epoch_end,
            "stop_training": bool(self.model.stop_training),
            **callback_state(self._checkpoint, self._early_stopping),
        }
        files.write_json_atomically(self._metadata_path, state)
        for name in os.listdir(self.backup_dir):
            if name.startswith(_WEIGHTS_PREFIX) and name.endswith(_WEIGHTS_SUFFIX):
                if name != weights_file:
                    os.remove(os.path.join(self.backup_dir, name))


def truncate_history(history_csv: str, epoch: int) -> int:
    """Drops the rows of epochs >= ``epoch`` from the CSVLogger file ``history_csv``.

    A killed run writes an epoch's row before that epoch's backup is committed; the
    resumed run repeats the epoch and writes its row again.

    Returns:
      How many rows were dropped.
    """
    if not os.path.isfile(history_csv):
        return 0
    with open(history_csv, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        return 0
    header, body = rows[0], rows[1:]
    # isdigit: a row cut short by the kill has no usable epoch (and is dropped).
    kept = [row for row in body if row[0].isdigit() and int(row[0]) < epoch]
    if len(kept) == len(body):
        return 0
    with files.atomic_write(history_csv) as temporary, open(temporary, "w", newline="") as f:
        csv.writer(f).writerows([header, *kept])
    logging.info(
        "%s: dropped %d row(s) of epochs from %d on (run again)",
        history_csv,
        len(body) - len(kept),
        epoch + 1,
    )
    return len(body) - len(kept)
