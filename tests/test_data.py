"""Tests for trainer/training/data.py's input modes: decode-once training end to end, both
placements."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from conftest import TINY_TRAIN_SETTINGS, run_train
from trainer.models import model as model_lib
from trainer.training import data as data_lib
from trainer.training import fit
from trainer.training.config import TrainConfig

TINY = {**TINY_TRAIN_SETTINGS, "epochs": 2, "steps_per_epoch": 3}


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["host", "accelerator"])
def test_decode_once_trains_and_saves_a_raw_image_model(tiny_records, tmp_path, placement):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        input_mode="decode_once",
        augment_placement=placement,
        **TINY,
    )
    augmenter = data_lib.model_augmenter(config)
    assert (augmenter is not None) == (placement == "accelerator")
    metrics = fit.train(config)
    assert metrics["epochs_completed"] == 2
    # Every epoch says how much of the step time went to waiting for input.
    shares = metrics["input_wait_share_per_epoch"]
    assert len(shares) == 2 and all(0 <= share <= 1 for share in shares)
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["input_wait_share_per_epoch"] == shares
    for name in ("model.keras", "best.keras"):
        model = model_lib.load_model(str(tmp_path / "model" / name))
        # The saved model takes raw images of the output size, with no augmentation layer.
        assert model.input_shape == (None, 32, 32, 3)
        assert not any("crop" in layer.name for layer in model.layers)
        images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
        assert model.predict(images, verbose=0).shape == (2, 2)


def test_settings_that_cannot_combine():
    common = dict(records_dir="r", model_dir="m", input_mode="decode_once")
    with pytest.raises(ValueError, match="augment=keras_cv_data does not apply"):
        TrainConfig(augment="keras_cv_data", **common)
    with pytest.raises(ValueError, match="data_service: .* cannot use --input_mode=decode_once"):
        TrainConfig(data_service="grpc://localhost:5050", **common)
    assert data_lib.model_augmenter(TrainConfig(augment="none", **common)) is None
    assert (
        data_lib.model_augmenter(
            TrainConfig(augment="none", augment_placement="accelerator", **common)
        )
        is None
    )


@pytest.mark.slow
def test_train_stops_when_decode_once_would_not_fit(tiny_records, tmp_path):
    result = run_train(
        tiny_records,
        tmp_path / "model",
        "--weights=none",
        "--image_size=32",
        "--batch_size=8",
        "--input_mode=decode_once",
        "--decode_once_max_gb=0.000001",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # "train: error: ...".
    error = [line for line in result.stderr.splitlines() if ": error: --input_mode" in line]
    assert len(error) == 1
    assert "24 images at 36x36x3" in error[0] and "--input_mode=stream" in error[0]
    assert not pathlib.Path(tmp_path / "model" / "metrics.json").exists()


def test_one_replica_validates_on_every_example_once_per_epoch(tiny_records, tmp_path):
    # 12 val examples in batches of 5: 3 steps (the last one partial) make exactly one pass,
    # and the next epoch's 3 steps make the same pass again (no warning, no running dry).
    import tensorflow as tf

    from records.manifest import Manifest

    config = TrainConfig(
        records_dir=str(tiny_records), model_dir=str(tmp_path / "m"), **{**TINY, "batch_size": 5}
    )
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    data = data_lib.make_data(config, Manifest.load(str(tiny_records)), strategy)
    assert data.validation_steps == 3
    iterator = iter(data.val)
    epochs = []
    for _ in range(2):
        batches = [next(iterator) for _ in range(data.validation_steps)]
        epochs.append(
            [
                image.tobytes()
                for images, _ in batches
                for image in strategy.experimental_local_results(images)[0].numpy()
            ]
        )
    assert len(epochs[0]) == 12 and len(set(epochs[0])) == 12
    assert epochs[1] == epochs[0]
