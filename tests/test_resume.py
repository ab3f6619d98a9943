"""Tests for trainer/training/resume.py: a resumed run must be the run that was interrupted.

The library tests interrupt ``fit`` in-process with scripted val_accuracy values; the
subprocess tests SIGKILL real training runs at exact points, not by timing, through
tests/train_runner.py (``train`` with a test-only callback, ``--kill_at``), which also
scripts val_accuracy (``--val_accuracy``: early stopping and best.keras follow the
script, not the training trajectory) and dumps what each resume restored (``--dump_dir``).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import signal

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN_FLAGS, run_process, train_runner_command
from trainer.models import model as model_lib
from trainer.training import callbacks as callbacks_lib
from trainer.training import features, resume


class _Interrupted(Exception):
    pass


def _history_epochs(path) -> list[int]:
    return pd.read_csv(path)["epoch"].tolist()


def test_truncate_history_keeps_the_rows_of_backed_up_epochs(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text('epoch,loss,note\r\n0,0.9,"[1, 2]"\r\n1,0.8,x\r\n2,0.7,x\r\n3,0.')
    assert resume.truncate_history(str(history), 2) == 2  # Row 2 and the cut-off row 3.
    assert history.read_bytes().decode() == 'epoch,loss,note\r\n0,0.9,"[1, 2]"\r\n1,0.8,x\r\n'
    assert resume.truncate_history(str(history), 2) == 0
    assert resume.truncate_history(str(tmp_path / "none.csv"), 0) == 0


# ---- In-process: scripted val_accuracy, an exception as the interruption. ----

# Unbroken, EarlyStopping(patience=2) stops after epoch 3 and the best epoch is 1.
SCRIPTED_VAL_ACCURACY = [0.5, 0.75, 0.625, 0.625, 0.625, 0.625, 0.625, 0.625]
UNBROKEN_EPOCHS = [0, 1, 2, 3]


class _ScriptedValAccuracy(keras.callbacks.Callback):
    """Replaces val_accuracy with a fixed sequence (first in the list, so all see it)."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = SCRIPTED_VAL_ACCURACY[epoch]


class _WeightsPerEpoch(keras.callbacks.Callback):
    def __init__(self, store):
        super().__init__()
        self.store = store

    def on_epoch_end(self, epoch, logs=None):
        self.store[epoch] = [w.copy() for w in self.model.get_weights()]


class _RaiseAtEpochEnd(keras.callbacks.Callback):
    """Placed just before the backup: the history row is written, the backup is not."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupted


def _tiny_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _fit(model, tmp_path, weights_store, resumed, extra=()):
    history_csv = tmp_path / callbacks_lib.HISTORY_NAME
    if resumed:  # What fit.train does before resuming.
        state = resume.read_backup_state(str(tmp_path / "backup"))
        resume.truncate_history(str(history_csv), state["epoch"])
    callbacks, _, checkpoint = callbacks_lib.make_callbacks(
        write_dir=str(tmp_path),
        backup_dir=str(tmp_path / "backup"),
        phase=0,
        inference_model=model,
        global_batch_size=4,
        backup_freq="epoch",
        early_stopping_patience=2,
        append_history=resumed,
        tensorboard=False,
    )
    callbacks = [_ScriptedValAccuracy(), _WeightsPerEpoch(weights_store), *callbacks]
    callbacks[-1:-1] = extra
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 2, 16)
    model.fit(
        x, y, batch_size=4, epochs=8, validation_data=(x[:8], y[:8]), callbacks=callbacks, verbose=0
    )
    return checkpoint


@pytest.mark.parametrize("interrupt", ["after_history_row", "before_best_keras_written"])
def test_resume_restores_best_score_and_patience(tmp_path, monkeypatch, interrupt):
    weights = {}
    extra = []
    if interrupt == "after_history_row":
        # Epoch 2's row is in history.csv, its backup is not: epoch 2 is run again.
        extra = [_RaiseAtEpochEnd(2)]
    else:
        # Epoch 1 (the best) is backed up, best.keras still holds epoch 0.
        save_pending = resume.InferenceModelCheckpoint.save_pending

        def interrupted_save_pending(self):
            if self._pending and self.best_epoch == 1:
                raise _Interrupted
            save_pending(self)

        monkeypatch.setattr(
            resume.InferenceModelCheckpoint, "save_pending", interrupted_save_pending
        )
    with pytest.raises(_Interrupted):
        _fit(_tiny_model(seed=1), tmp_path, weights, resumed=False, extra=extra)
    monkeypatch.undo()
    state = resume.read_backup_state(str(tmp_path / "backup"))
    assert state["epoch"] == 2 and state["epoch_end"]
    assert state["best"] == {"value": 0.75, "epoch": 1}
    assert state["early_stopping"]["wait"] == 0 and state["early_stopping"]["best"] == 0.75

    # A fresh model (other initial weights), as in a new process.
    checkpoint = _fit(_tiny_model(seed=2), tmp_path, weights, resumed=True)
    # Patience carried over: stops where the unbroken run stops, every epoch logged once.
    assert _history_epochs(tmp_path / callbacks_lib.HISTORY_NAME) == UNBROKEN_EPOCHS
    # The resumed epochs 2 and 3 (0.625) did not replace the best of epoch 1 (0.75).
    assert (checkpoint.best, checkpoint.best_epoch) == (0.75, 1)
    best_model = keras.models.load_model(tmp_path / callbacks_lib.BEST_MODEL_NAME)
    for saved, epoch_one in zip(best_model.get_weights(), weights[1]):
        np.testing.assert_array_equal(saved, epoch_one)
    assert resume.read_backup_state(str(tmp_path / "backup"))["stop_training"]


def test_a_backup_is_one_weights_file_and_the_metadata_naming_it(tmp_path):
    weights = {}
    with pytest.raises(_Interrupted):
        _fit(_tiny_model(seed=1), tmp_path, weights, resumed=False, extra=[_RaiseAtEpochEnd(1)])
    backup = tmp_path / "backup"
    state = resume.read_backup_state(str(backup))
    # Older weights files are deleted once the metadata names the new one; no temporary
    # file is left over.
    assert sorted(p.name for p in backup.iterdir()) == sorted(
        [state["weights_file"], resume.METADATA_NAME]
    )


# ---- Subprocess: real train runs SIGKILLed at exact points. ----

FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--deterministic",
    # small_cnn, not the default VGG16 (14.7 M weights: each backup, dump and .keras file
    # ~60 MB, 19 s a run against 11 s): resume is the same code for every backbone, and its
    # trainable batch norm adds moving statistics to what a resume must restore. Phase one
    # trains the head only (the 26 base layers frozen but block4_pool, which has no
    # weights); phase two also block4: a different optimizer.
    "--backbone=small_cnn",
    "--freeze_layers=25",
    "--fine_tune_freeze_layers=19",
    "--epochs=4",
    "--fine_tune_epochs=4",
    "--steps_per_epoch=3",
    "--backup_freq=2",
    "--early_stopping_patience=2",
    "--learning_rate=0.01",
    "--fine_tune_learning_rate=0.01",
]
PHASE_TWO_START = 4
# The val_accuracy every run reports for epochs 0..7, whatever the weights. Unbroken,
# EarlyStopping(patience=2) stops phase one after epoch 2 (no gain after epoch 0) and
# phase two after epoch 6 (none after epoch 4); epoch 4 is the best: best.keras.
SCRIPT = [0.5, 0.5, 0.5, 0.5, 0.75, 0.625, 0.625, 0.625]
UNBROKEN_HISTORY = [0, 1, 2, 4, 5, 6]
BEST_EPOCH = 4
# Kill points PHASE:EPOCH:BATCH, in order: each run resumes the one before. A resume that
# lost EarlyStopping's patience would run epoch 3 or 7 (its first epoch after the
# resume would count as a gain); one that lost phase one's stop would run epoch 3; one
# that lost the best score would let epoch 5 (0.625) replace epoch 4 in best.keras.
KILLS = [
    "0:1:2",  # Phase one mid-epoch, after the backup at batch 1.
    "0:1:end",  # Phase one: epoch 1's history row written, its backup not.
    "1:4:0",  # Phase boundary: phase one stopped early, phase two trained a step, no backup.
    "1:5:2",  # Phase two mid-epoch, after the backup at batch 1.
]
# What the backup a kill left holds: (phase, epoch, batch, at an epoch end, phase one
# stopped, best {value, epoch}, EarlyStopping (wait, best)).
LEFT = {
    "0:1:2": (0, 1, 1, False, False, {"value": 0.5, "epoch": 0}, (0, 0.5)),
    "0:1:end": (0, 1, 1, False, False, {"value": 0.5, "epoch": 0}, (0, 0.5)),
    "1:4:0": (0, 3, 0, True, True, {"value": 0.5, "epoch": 0}, (2, 0.5)),
    "1:5:2": (1, 5, 1, False, False, {"value": 0.75, "epoch": 4}, (0, 0.75)),
}


def _train(records_dir, model_dir, dump_dir, *flags):
    return run_process(
        train_runner_command(records_dir, model_dir, f"--dump_dir={dump_dir}", *flags)
    )


def _h5_arrays(path) -> dict[str, np.ndarray]:
    arrays = {}

    def add(name, item):
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(path, "r") as f:
        f.visititems(add)
    return arrays


def _snapshot(model_dir: pathlib.Path, snapshot: pathlib.Path) -> tuple[int, dict]:
    """Copies what a kill left (backups, history); returns (phase to resume, its state)."""
    snapshot.mkdir()
    for backup in model_dir.glob("backup*"):
        shutil.copytree(backup, snapshot / backup.name)
    shutil.copy(model_dir / callbacks_lib.HISTORY_NAME, snapshot / callbacks_lib.HISTORY_NAME)
    fine_tune = resume.read_backup_state(str(snapshot / "backup_fine_tune"))
    if fine_tune is not None:
        return 1, fine_tune
    return 0, resume.read_backup_state(str(snapshot / "backup"))


def _check_restored(snapshot: pathlib.Path, phase: int, state: dict, dump: pathlib.Path):
    """What a resumed run held right after its restore equals what the kill left."""
    backup = _h5_arrays(snapshot / ["backup", "backup_fine_tune"][phase] / state["weights_file"])
    phase_over = phase == 0 and (state["stop_training"] or state["epoch"] == PHASE_TWO_START)
    # Phase one over: the resumed run starts phase two (phase one runs no epoch).
    dumped_phase = 1 if phase_over else phase
    assert not (phase_over and (dump / "phase0.json").exists()), "phase one ran again"
    restored = json.loads((dump / f"phase{dumped_phase}.json").read_text())
    dumped = _h5_arrays(dump / f"phase{dumped_phase}.weights.h5")
    if phase_over:
        # Phase two starts from phase one's final weights, with a fresh optimizer.
        layers = [name for name in backup if name.startswith("layers/")]
        for name in layers:
            np.testing.assert_array_equal(dumped[name], backup[name], err_msg=name)
        assert restored["epoch"] == PHASE_TWO_START and restored["iterations"] == 0
        return
    # The weights, the iteration count and the momentum slots, exactly as backed up.
    assert dumped.keys() == backup.keys()
    for name in backup:
        np.testing.assert_array_equal(dumped[name], backup[name], err_msg=name)
    assert restored["iterations"] == int(backup["optimizer/vars/0"]) > 0
    slots = [name for name in backup if name.startswith("optimizer/vars/")][2:]
    assert slots and any(np.any(backup[name]) for name in slots), "momentum all zero"
    assert restored["epoch"] == state["epoch"]


@pytest.mark.slow
def test_sigkill_at_every_point_resumes_the_same_run(tiny_records, tmp_path):
    model_dir = tmp_path / "model"
    script = "--val_accuracy=" + ",".join(map(str, SCRIPT))
    left = {}  # Kill point -> (snapshot dir, phase to resume, its backup state).
    previous = None
    for index, kill_at in enumerate([*KILLS, ""]):
        dump = tmp_path / f"dump{index}"
        kill = [f"--kill_at={kill_at}"] if kill_at else []
        result = _train(tiny_records, model_dir, dump, *FLAGS, script, *kill)
        expected_code = -signal.SIGKILL if kill_at else 0
        assert result.returncode == expected_code, f"{kill_at}: {result.stderr[-3000:]}"
        if previous:
            assert "resuming from the backup" in result.stderr
            _check_restored(*left[previous], dump)
        if kill_at:
            snapshot = tmp_path / f"snapshot{index}"
            left[kill_at] = (snapshot, *_snapshot(model_dir, snapshot))
        previous = kill_at

    # Each kill landed where it was meant to, and its backup holds the run's state.
    for kill_at, (phase, epoch, batch, epoch_end, stopped, best, early_stopping) in LEFT.items():
        _, left_phase, state = left[kill_at]
        assert (left_phase, state["epoch"], state["batch"], state["epoch_end"]) == (
            phase,
            epoch,
            batch,
            epoch_end,
        ), kill_at
        assert state["stop_training"] == stopped, kill_at
        assert state["best"] == best, kill_at
        waited = state["early_stopping"]
        assert (waited["wait"], waited["best"]) == early_stopping, kill_at
    snapshot = left["0:1:end"][0]
    assert 1 in _history_epochs(snapshot / callbacks_lib.HISTORY_NAME)  # Row, no backup.

    history = pd.read_csv(model_dir / callbacks_lib.HISTORY_NAME)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # Every epoch once, in order, as the unbroken run; the script reached every callback.
    assert history["epoch"].tolist() == UNBROKEN_HISTORY
    np.testing.assert_array_equal(history["val_accuracy"], [SCRIPT[e] for e in UNBROKEN_HISTORY])
    assert metrics["best_val_accuracy_epoch"] == BEST_EPOCH + 1
    # best.keras holds epoch 4's weights, as the run killed in epoch 5 left them at the
    # end of epoch 4 (its dump), not a later epoch's.
    best_model = model_lib.load_model(str(model_dir / callbacks_lib.BEST_MODEL_NAME))
    epoch_four = _h5_arrays(tmp_path / "dump3" / f"epoch{BEST_EPOCH}.weights.h5")
    best_model.save_weights(tmp_path / "best.weights.h5")
    saved = _h5_arrays(tmp_path / "best.weights.h5")
    layers = [name for name in saved if name.startswith("layers/")]
    assert layers
    for name in layers:
        np.testing.assert_array_equal(saved[name], epoch_four[name], err_msg=name)
    assert not list(model_dir.glob("backup*"))


FEATURES_FLAGS = [
    # The demo's recipe (Makefile, BACKBONE=efficientnet_lite0) at a test's size: the
    # frozen base runs once, the head trains on its output with Adam.
    "--backbone=efficientnet_lite0",
    "--weights=none",
    "--freeze_layers=141",
    "--input_mode=features",
    "--pooling=avg",
    # model.keras is then the head the run trained to its end, not its best epoch's.
    "--norestore_best",
    "--optimizer=adam",
    "--learning_rate=1e-3",
    "--augment=none",
    "--image_size=32",
    "--dense_units=8",
    "--batch_size=8",
    "--notensorboard",
    "--seed=5",
    "--epochs=3",
    "--steps_per_epoch=3",
    "--backup_freq=2",
    "--early_stopping_patience=0",
]


@pytest.mark.slow
def test_sigkill_in_features_mode_resumes_the_head_and_saves_it(tiny_records, tmp_path):
    model_dir = tmp_path / "model"
    killed = _train(tiny_records, model_dir, tmp_path / "dump0", *FEATURES_FLAGS, "--kill_at=0:1:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (model_dir / "metrics.json").exists()
    state = resume.read_backup_state(str(model_dir / "backup"))
    assert (state["epoch"], state["batch"], state["epoch_end"]) == (1, 1, False)
    backup = _h5_arrays(model_dir / "backup" / state["weights_file"])

    result = _train(tiny_records, model_dir, tmp_path / "dump1", *FEATURES_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from the backup" in result.stderr
    # The head (what trains on features) and Adam's state, exactly as backed up.
    restored = json.loads((tmp_path / "dump1" / "phase0.json").read_text())
    dumped = _h5_arrays(tmp_path / "dump1" / "phase0.weights.h5")
    assert dumped.keys() == backup.keys()
    for name in backup:
        np.testing.assert_array_equal(dumped[name], backup[name], err_msg=name)
    assert (restored["epoch"], restored["iterations"]) == (1, int(backup["optimizer/vars/0"]))
    assert _history_epochs(model_dir / callbacks_lib.HISTORY_NAME) == [0, 1, 2]
    # model.keras (raw RGB in) carries the head the resumed run trained to its end.
    head = features.head_model(model_lib.load_model(str(model_dir / "model.keras")))
    head.save_weights(tmp_path / "saved_head.weights.h5")
    saved = _h5_arrays(tmp_path / "saved_head.weights.h5")
    final = _h5_arrays(tmp_path / "dump1" / "epoch2.weights.h5")
    layers = [name for name in final if name.startswith("layers/")]
    assert len(layers) == 4  # Dense and predictions: kernel and bias each.
    for name in layers:
        np.testing.assert_array_equal(saved[name], final[name], err_msg=name)
