"""Tests for trainer/training/features.py: ``--input_mode=features`` (the frozen base run once)."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN_FLAGS, TINY_TRAIN_SETTINGS, run_train
from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer.inference import evaluation
from trainer.models import model as model_lib
from trainer.training import features, fit
from trainer.training.config import TrainConfig

# VGG16 with all 19 base layers frozen: a frozen base with weights to share.
TINY = dict(TINY_TRAIN_SETTINGS, freeze_layers=19, pooling="avg", augment="none")


def test_feature_and_head_models_share_the_models_layers(tiny_records):
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8, pooling="avg")
    )
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    extractor, head = features.feature_model(model), features.head_model(model)
    assert extractor.output_shape == (None, 512) and head.input_shape == (None, 512)
    np.testing.assert_allclose(head(extractor(images)), model(images), rtol=1e-5, atol=1e-6)
    assert {id(w) for w in head.trainable_weights} <= {id(w) for w in model.weights}


@pytest.mark.slow
def test_features_of_every_record_in_eval_order(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    model = model_lib.build_model(
        model_lib.ModelConfig(
            image_size=(32, 32), weights="none", freeze_layers=19, dense_units=8, pooling="avg"
        )
    )
    cache = features.compute(model, manifest, batch_size=5)
    assert cache.train.features.shape == (24, 512) and cache.val.features.shape == (12, 512)
    images, labels = next(
        iter(dataset_lib.eval_dataset(manifest, 12, split="val", image_size=(32, 32)))
    )
    np.testing.assert_array_equal(cache.val.labels, labels.numpy())
    expected = features.feature_model(model).predict_on_batch(images)
    np.testing.assert_allclose(cache.val.features, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_litert_features_are_keras_features(tiny_records, tmp_path, litert_images):
    manifest = Manifest.load(str(tiny_records))
    model = model_lib.build_model(
        model_lib.ModelConfig(
            image_size=(32, 32), weights="none", freeze_layers=19, dense_units=8, pooling="avg"
        )
    )
    by_keras = features.compute(model, manifest, batch_size=5, engine="keras")
    by_litert = features.compute(
        model, manifest, batch_size=5, engine="litert", cache_dir=str(tmp_path)
    )
    assert sum(litert_images) == 1 + 24 + 12
    for split in ("train", "val"):
        keras_split, lite_split = getattr(by_keras, split), getattr(by_litert, split)
        np.testing.assert_array_equal(lite_split.labels, keras_split.labels)
        np.testing.assert_allclose(lite_split.features, keras_split.features, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_train_engine_flag_reaches_the_features_pass(tiny_records, tmp_path):
    result = run_train(
        tiny_records,
        tmp_path / "model",
        *TINY_TRAIN_FLAGS,
        "--freeze_layers=19",
        "--pooling=avg",
        "--input_mode=features",
        "--engine=litert",
        "--epochs=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "model").glob("litert_float32_*.tflite"))


def test_a_base_that_trains_is_refused(tiny_records):
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", freeze_layers=15)
    )
    with pytest.raises(ValueError, match="--freeze_layers=19 .* or use --input_mode=stream"):
        features.compute(model, Manifest.load(str(tiny_records)), batch_size=8)


def test_features_memory_limit_names_the_way_out(tiny_records):
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", freeze_layers=19)
    )
    with pytest.raises(ValueError, match="needs ~.* GB .* --pooling=avg"):
        features.compute(model, Manifest.load(str(tiny_records)), batch_size=8, max_gb=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(augment="keras_cv_model"), "runs inside the model"),
        (dict(data_service="grpc://localhost:1"), "--input_mode=stream with the tf.data"),
    ],
)
def test_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(records_dir="r", model_dir="m", input_mode="features", **overrides)


@pytest.mark.slow
def test_train_with_features_then_a_streamed_fine_tune_phase(tiny_records, tmp_path):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        input_mode="features",
        epochs=3,
        fine_tune_epochs=1,
        fine_tune_freeze_layers=15,
        fine_tune_learning_rate=1e-3,
        restore_best=False,  # The last epoch's weights: what the fine-tune trained.
        **TINY,
    )
    keras.utils.set_random_seed(config.seed)
    initial = model_lib.build_model(config.model_config())
    metrics = fit.train(config)
    assert metrics["epochs_completed"] == 4
    assert metrics["feature_cache"]["images_per_sec"] > 0
    history = pd.read_csv(tmp_path / "model" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    trained = model_lib.load_model(str(tmp_path / "model" / "model.keras"))
    # The saved model is the whole raw-RGB model; phase one trained its head, phase two
    # (streamed) its block5.
    assert trained.input_shape == (None, 32, 32, 3)
    for name, changed in (("dense", True), ("block5_conv1", True), ("block4_conv3", False)):
        layer = trained.get_layer(name) if name == "dense" else model_lib.base_model(trained)
        layer = layer if name == "dense" else layer.get_layer(name)
        before = (
            initial.get_layer(name)
            if name == "dense"
            else model_lib.base_model(initial).get_layer(name)
        )
        assert changed != np.array_equal(before.kernel.numpy(), layer.kernel.numpy()), name


@pytest.mark.slow
def test_head_trained_on_features_is_the_saved_models_head(tiny_records, tmp_path):
    # Validation on features and evaluate on images must agree: same head, same decode.
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        input_mode="features",
        epochs=2,
        restore_best=False,  # model.keras is then the last epoch's, as final_val_accuracy.
        **TINY,
    )
    metrics = fit.train(config)
    result = evaluation.evaluate(str(tmp_path / "model" / "model.keras"), str(tiny_records)).metrics
    assert result["accuracy"] == pytest.approx(metrics["final_val_accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(metrics["final_val_loss"], rel=1e-3)


@pytest.mark.slow
def test_offline_train_with_efficientnet_lite0_imagenet(tiny_records, tmp_path, monkeypatch):
    # No network (a dead proxy) and an empty Keras cache: the weights come from the package.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    result = run_train(
        tiny_records,
        tmp_path / "model",
        "--backbone=efficientnet_lite0",
        "--weights=imagenet",
        "--input_mode=features",
        "--augment=none",
        "--pooling=avg",
        "--image_size=64",
        "--batch_size=8",
        "--epochs=1",
        "--tensorboard=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converting the efficientnet_lite0 ImageNet weights once" in result.stderr
    metrics = json.loads(pathlib.Path(tmp_path / "model" / "metrics.json").read_text())
    assert metrics["settings"]["backbone"] == "efficientnet_lite0"
    assert (
        tmp_path / "keras_home" / "models" / "efficientnet_lite0_imagenet_notop.weights.h5"
    ).is_file()
