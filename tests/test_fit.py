"""Tests for trainer/training/fit.py: real training runs through the library function."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN_SETTINGS, ScriptedValAccuracy
from trainer.models import model as model_lib
from trainer.training import fit
from trainer.training.config import TrainConfig

TINY = TINY_TRAIN_SETTINGS


@pytest.mark.slow
def test_one_step_end_to_end_and_freezing(tiny_records, tmp_path):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        epochs=1,
        steps_per_epoch=1,
        augment="none",
        **TINY,
    )
    # The same seed gives the same initial weights train() starts from.
    keras.utils.set_random_seed(config.seed)
    initial = model_lib.build_model(config.model_config())
    metrics = fit.train(config)

    model_dir = pathlib.Path(config.model_dir)
    for name in ("model.keras", "best.keras", "history.csv", "metrics.json", "training_curves.png"):
        assert (model_dir / name).is_file(), name
    assert not (model_dir / "backup").exists()  # Deleted once the run completes.
    saved = json.loads((model_dir / "metrics.json").read_text())
    assert saved["epochs_completed"] == 1
    assert saved["final_val_accuracy"] in {n / 12 for n in range(13)}  # 12 val examples
    assert saved["settings"]["batch_size"] == 8
    assert saved["records_settings"] == {"writer": "tests.conftest.write_records"}
    assert metrics["strategy"] == "OneDeviceStrategy"

    trained = model_lib.load_model(str(model_dir / "model.keras"))
    initial_base = model_lib.base_model(initial)
    trained_base = model_lib.base_model(trained)
    for index, (before, after) in enumerate(zip(initial_base.layers, trained_base.layers)):
        for w_before, w_after in zip(before.weights, after.weights):
            same = np.array_equal(w_before.numpy(), w_after.numpy())
            if index < 15:
                assert same, f"frozen {before.name} changed"
            else:
                assert not same, f"trainable {before.name} did not change"
    for name in ("dense", "predictions"):
        assert not np.array_equal(
            initial.get_layer(name).kernel.numpy(), trained.get_layer(name).kernel.numpy()
        )


@pytest.mark.slow
def test_sigmoid_head_and_model_side_augmentation(tiny_records, tmp_path):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        epochs=1,
        steps_per_epoch=2,
        head="sigmoid",
        augment="keras_cv_model",
        **TINY,
    )
    metrics = fit.train(config)
    assert metrics["epochs_completed"] == 1
    saved = model_lib.load_model(str(tmp_path / "model" / "model.keras"))
    assert saved.output_shape == (None, 1)
    assert saved.name == "vgg16_dogs_vs_cats"  # The plain model, not the augmenting wrapper.


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(optimizer="lamb"), "optimizer='lamb': expected one of sgd, adam"),
        (dict(image_size=16), "image_size=16 must be >= 32"),
        (dict(backup_freq="0"), "backup_freq=0"),
        (dict(augment="keras_cv"), "augment='keras_cv': expected one of fused, keras_cv_data"),
        (dict(dropout=1.0), "dropout=1.0 must be < 1"),
    ],
)
def test_bad_settings_rejected_by_the_config(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(records_dir="r", model_dir=str(tmp_path / "m"), **{**TINY, **overrides})


def test_batch_larger_than_the_split_is_rejected(tiny_records, tmp_path):
    config = TrainConfig(
        records_dir=str(tiny_records), model_dir=str(tmp_path / "m"), **{**TINY, "batch_size": 64}
    )
    with pytest.raises(ValueError, match="larger than the 24 training examples"):
        fit.train(config)


@pytest.mark.slow
def test_training_start_reads_the_manifest_once(tiny_records, tmp_path, monkeypatch):
    from records import manifest as manifest_lib

    opened = []
    real_gfile = manifest_lib.tf.io.gfile.GFile

    def counting_gfile(path, *args, **kwargs):
        if str(path).endswith("manifest.json"):
            opened.append(path)
        return real_gfile(path, *args, **kwargs)

    monkeypatch.setattr(manifest_lib.tf.io.gfile, "GFile", counting_gfile)
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        epochs=1,
        steps_per_epoch=1,
        augment="none",
        **TINY,
    )
    fit.train(config)
    assert len(opened) == 1


@pytest.mark.slow
def test_second_phase_unfreezes_more_layers(tiny_records, tmp_path):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        epochs=1,
        steps_per_epoch=1,
        augment="none",
        fine_tune_epochs=1,
        fine_tune_freeze_layers=11,
        fine_tune_learning_rate=1e-3,
        restore_best=False,  # The last epoch's weights: what phase two trained.
        **TINY,
    )
    keras.utils.set_random_seed(config.seed)
    initial = model_lib.build_model(config.model_config())
    metrics = fit.train(config)
    assert metrics["epochs_completed"] == 2
    history = pd.read_csv(tmp_path / "model" / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    trained = model_lib.load_model(str(tmp_path / "model" / "model.keras"))
    before = model_lib.base_model(initial)
    after = model_lib.base_model(trained)

    # block4 (layers 11-14) trained in phase two; blocks 1-3 stayed frozen.
    def kernel(base, name):
        return base.get_layer(name).kernel.numpy()

    assert not np.array_equal(kernel(before, "block4_conv1"), kernel(after, "block4_conv1"))
    np.testing.assert_array_equal(kernel(before, "block3_conv3"), kernel(after, "block3_conv3"))


class _Scripted(ScriptedValAccuracy, keras.callbacks.Callback):
    def __init__(self, values):
        super().__init__()
        self.script_val_accuracy(values)


@pytest.mark.slow
@pytest.mark.parametrize("restore_best", [True, False])
def test_model_keras_holds_the_best_epoch_unless_told_otherwise(
    tiny_records, tmp_path, restore_best
):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        epochs=3,
        steps_per_epoch=2,
        augment="none",
        restore_best=restore_best,
        # small_cnn (every layer trains, so each epoch's weights differ), not VGG16: its
        # 14.7 M weights made best.keras and model.keras ~60 MB each to write and reload.
        **{**TINY, "backbone": "small_cnn"},
    )
    # Epoch 2 is the best on (scripted) val; epoch 3, the last, is worse.
    metrics = fit.train(config, callbacks=[_Scripted([0.5, 0.9, 0.6])])
    shipped = model_lib.load_model(str(tmp_path / "model" / "model.keras"))
    best = model_lib.load_model(str(tmp_path / "model" / "best.keras"))
    same = all(np.array_equal(a, b) for a, b in zip(shipped.get_weights(), best.get_weights()))
    assert metrics["best_val_accuracy_epoch"] == 2
    if restore_best:
        assert same and metrics["model_epoch"] == 2
        assert metrics["model_val_accuracy"] == metrics["best_val_accuracy"] == 0.9
    else:
        assert not same and metrics["model_epoch"] is None
        assert metrics["model_val_accuracy"] == metrics["final_val_accuracy"] == 0.6
