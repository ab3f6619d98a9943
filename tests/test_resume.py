"""Tests for trainer/resume.py: a resumed run must be the run that was interrupted.

The library tests interrupt ``fit`` in-process with scripted val_accuracy values; the
subprocess test SIGKILLs real ``train`` runs at exact points through the trainer's test
hook (``callbacks.KILL_AT_ENV``), not by timing, and reads what each resume restored
through its other hook (``callbacks.DUMP_DIR_ENV``).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import subprocess_env, train_command

from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer import callbacks as callbacks_lib
from trainer import model as model_lib
from trainer import resume

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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
        save_pending = callbacks_lib.InferenceModelCheckpoint.save_pending

        def interrupted_save_pending(self):
            if self._pending and self.best_epoch == 1:
                raise _Interrupted
            save_pending(self)

        monkeypatch.setattr(
            callbacks_lib.InferenceModelCheckpoint, "save_pending", interrupted_save_pending
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
    "--weights=none",
    "--image_size=32",
    "--dense_units=8",
    "--batch_size=8",
    "--augment=none",
    "--notensorboard",
    "--seed=5",
    "--deterministic",
    # Phase one trains the head only; phase two also block5: a different optimizer.
    "--freeze_layers=18",
    "--fine_tune_freeze_layers=15",
    "--epochs=4",
    "--fine_tune_epochs=4",
    "--steps_per_epoch=3",
    "--backup_freq=2",
    "--early_stopping_patience=2",
    # Large enough that every epoch's val_loss differs (it identifies best.keras's epoch).
    "--learning_rate=0.01",
    "--fine_tune_learning_rate=0.01",
]
PHASE_TWO_START = 4
PATIENCE = 2
STEPS = 3
# Test hook kill points PHASE:EPOCH:BATCH, in order: each run resumes the one before.
KILLS = [
    "0:1:2",  # Phase one mid-epoch, after the backup at batch 1.
    "0:1:end",  # Phase one: epoch 1's history row written, its backup not.
    "1:4:0",  # Phase boundary: phase one over, phase two trained a step, has no backup.
    "1:5:2",  # Phase two mid-epoch.
]


def _train(records_dir, model_dir, kill_at, dump_dir):
    env = subprocess_env(
        **{callbacks_lib.KILL_AT_ENV: kill_at, callbacks_lib.DUMP_DIR_ENV: str(dump_dir)}
    )
    # subprocess.run kills the child if the timeout expires.
    return subprocess.run(
        train_command(records_dir, model_dir, *FLAGS),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )


def _h5_arrays(path) -> dict[str, np.ndarray]:
    arrays = {}

    def add(name, item):
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(path, "r") as f:
        f.visititems(add)
    return arrays


def _early_stopping_replay(values):
    """Keras' EarlyStopping(mode=max) over (epoch, val_accuracy): (wait, best, stop epoch)."""
    wait, best = 0, None
    for epoch, value in values:
        wait += 1
        if best is None or value > best:
            wait, best = 0, value
        elif wait >= PATIENCE and epoch > 0:
            return wait, best, epoch
    return wait, best, None


def _expected_epochs(history: pd.DataFrame) -> list[int]:
    """The epochs an uninterrupted run logs, given these val_accuracy values."""
    values = dict(zip(history["epoch"], history["val_accuracy"]))
    expected = []
    for start, end in [(0, PHASE_TWO_START), (PHASE_TWO_START, 2 * PHASE_TWO_START)]:
        phase = []
        for epoch in range(start, end):
            assert epoch in values, f"epoch {epoch} is missing from history.csv"
            phase.append((epoch, values[epoch]))
            if _early_stopping_replay(phase)[2] is not None:
                break
        expected += [epoch for epoch, _ in phase]
    return expected


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
    history = pd.read_csv(snapshot / callbacks_lib.HISTORY_NAME)
    committed = history[history["epoch"] < state["epoch"]]
    phase_over = phase == 0 and (state["stop_training"] or state["epoch"] == PHASE_TWO_START)
    # Phase one over: the resumed run starts phase two (phase one runs no epoch).
    dumped_phase = 1 if phase_over else phase
    assert not (phase_over and (dump / "phase0.json").exists()), "phase one ran again"
    restored = json.loads((dump / f"phase{dumped_phase}.json").read_text())
    dumped = _h5_arrays(dump / f"phase{dumped_phase}.weights.h5")

    # best.keras's score: the best val_accuracy of the epochs backed up, in either phase.
    best_row = committed.loc[committed["val_accuracy"].idxmax()]
    expected_best = {"value": best_row["val_accuracy"], "epoch": int(best_row["epoch"])}
    assert restored["best"] == expected_best
    if phase_over:
        # Phase two starts from phase one's final weights, with a fresh optimizer and
        # patience.
        layers = [name for name in backup if name.startswith("layers/")]
        for name in layers:
            np.testing.assert_array_equal(dumped[name], backup[name], err_msg=name)
        assert restored["epoch"] == PHASE_TWO_START and restored["iterations"] == 0
        assert restored["early_stopping"]["wait"] == 0
        assert restored["early_stopping"]["best"] is None
        return
    # The weights, the iteration count and the momentum slots, exactly as backed up.
    assert dumped.keys() == backup.keys()
    for name in backup:
        np.testing.assert_array_equal(dumped[name], backup[name], err_msg=name)
    assert restored["iterations"] == int(backup["optimizer/vars/0"]) > 0
    slots = [name for name in backup if name.startswith("optimizer/vars/")][2:]
    assert slots and any(np.any(backup[name]) for name in slots), "momentum all zero"
    assert restored["epoch"] == state["epoch"]
    # EarlyStopping's patience as an unbroken EarlyStopping had it after those epochs.
    in_phase = committed[committed["epoch"] >= phase * PHASE_TWO_START]
    wait, best, _ = _early_stopping_replay(zip(in_phase["epoch"], in_phase["val_accuracy"]))
    assert (restored["early_stopping"]["wait"], restored["early_stopping"]["best"]) == (wait, best)


def test_sigkill_at_every_point_resumes_the_same_run(tiny_records, tmp_path):
    model_dir = tmp_path / "model"
    left = {}  # Kill point -> (snapshot dir, phase to resume, its backup state).
    previous = None
    for index, kill_at in enumerate([*KILLS, ""]):
        dump = tmp_path / f"dump{index}"
        result = _train(tiny_records, model_dir, kill_at, dump)
        expected_code = -signal.SIGKILL if kill_at else 0
        assert result.returncode == expected_code, f"{kill_at}: {result.stderr[-3000:]}"
        if previous:
            assert "resuming from the backup" in result.stderr
            _check_restored(*left[previous], dump)
        if kill_at:
            snapshot = tmp_path / f"snapshot{index}"
            left[kill_at] = (snapshot, *_snapshot(model_dir, snapshot))
        previous = kill_at

    # Each kill landed where it was meant to: (phase, epoch, batch, at an epoch end).
    def where(kill_at):
        _, phase, state = left[kill_at]
        return phase, state["epoch"], state["batch"], state["epoch_end"]

    assert where("0:1:2") == (0, 1, 1, False)
    assert where("0:1:end") == (0, 1, 1, False)
    snapshot = left["0:1:end"][0]
    assert 1 in _history_epochs(snapshot / callbacks_lib.HISTORY_NAME)  # Row, no backup.
    assert where("1:4:0")[0] == 0 and where("1:4:0")[3]  # No phase-two backup yet.
    # With these settings EarlyStopping ends phase one early, so the boundary resume also
    # restores a stop (if the settings change, pick ones where it still does).
    assert left["1:4:0"][2]["stop_training"]
    assert where("1:5:2") == (1, 5, 1, False)

    history = pd.read_csv(model_dir / callbacks_lib.HISTORY_NAME)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # Every epoch once, in order, and as many as an uninterrupted run with these values.
    assert history["epoch"].tolist() == _expected_epochs(history)
    assert len(history) < 2 * PHASE_TWO_START  # EarlyStopping did stop a phase.
    # best.keras holds the epoch metrics.json names: its val_loss is that epoch's.
    best_epoch = metrics["best_val_accuracy_epoch"] - 1
    best_model = model_lib.load_model(str(model_dir / callbacks_lib.BEST_MODEL_NAME))
    best_model.compile(loss="sparse_categorical_crossentropy")
    val = dataset_lib.eval_dataset(Manifest.load(str(tiny_records)), 8, image_size=32)
    val_loss = best_model.evaluate(val, verbose=0, return_dict=True)["loss"]
    distance = (history.set_index("epoch")["val_loss"] - val_loss).abs()
    assert distance.idxmin() == best_epoch and distance.min() < 1e-5 * val_loss
    assert sorted(distance)[1] > 1e-4 * val_loss  # No other epoch is that close.
    # Without the restored best score, epoch 1 (no better than epoch 0, the first epoch
    # after a resume) would have replaced best.keras: the check above would catch it.
    val_accuracy = history.set_index("epoch")["val_accuracy"]
    assert val_accuracy[1] <= val_accuracy[0]
    assert not list(model_dir.glob("backup*"))
