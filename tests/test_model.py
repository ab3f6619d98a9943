"""Tests for trainer/models/model.py: architecture, preprocessing, freezing, weights handling."""

from __future__ import annotations

import logging
import socket

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.models import backbones
from trainer.models import model as model_lib

SMALL = dict(image_size=(32, 32), dense_units=8)


def small_config(**overrides) -> model_lib.ModelConfig:
    return model_lib.ModelConfig(**{**SMALL, "weights": "none", **overrides})


def test_architecture_and_freezing():
    model = model_lib.build_model(small_config())
    base = model_lib.base_model(model)
    assert model.output_shape == (None, 2)
    assert [layer.name for layer in base.layers[:15]][-1] == "block4_pool"
    assert not any(layer.trainable for layer in base.layers[:15])
    assert all(layer.trainable for layer in base.layers[15:])
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    # block5's 3 convs + dense + predictions, 2 variables each.
    assert len(model.trainable_weights) == 10
    assert {"dense", "predictions"} <= trainable


def test_sigmoid_head_and_avg_pooling():
    model = model_lib.build_model(small_config(head="sigmoid", pooling="avg"))
    assert model.output_shape == (None, 1)
    # Global average pooling: the head's dense layer sees one vector of VGG16's 512 channels
    # (flatten would give 4 x 4 x 512 at 128x128... at 32x32, 1 x 1 x 512: compare kernels).
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("dense").kernel.shape[0] == 512


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="freeze_layers=99"):
        model_lib.build_model(small_config(freeze_layers=99))
    with pytest.raises(ValueError, match="head='tanh'"):
        model_lib.build_model(small_config(head="tanh"))


def test_preprocess_matches_keras_eagerly_and_in_dataset_map():
    images = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
    expected = keras.applications.vgg16.preprocess_input(images.astype(np.float32))
    layer = backbones.VGG16Preprocess()
    np.testing.assert_allclose(layer(images).numpy(), expected, atol=1e-4)
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(layer)))
    np.testing.assert_allclose(mapped.numpy(), expected, atol=1e-4)


def test_output_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = model_lib.build_model(small_config())
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        assert model.get_layer("dense").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        # Keras wraps the optimizer for loss scaling itself (see trainer/training/precision.py).
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _write_legacy_notop_h5(base: keras.Model, path) -> None:
    """Writes `base`'s weights the way Keras 2 `save_weights` wrote the notop .h5 file."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in base.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in base.layers:
            group = f.create_group(layer.name)
            names = []
            for weight, kind in zip(layer.weights, ("W", "b")):
                name = f"{layer.name}_{kind}_1:0"
                group.create_dataset(name, data=weight.numpy())
                names.append(name.encode())
            group.attrs["weight_names"] = names


def test_legacy_notop_h5_file_loads(tmp_path):
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / model_lib.NOTOP_WEIGHTS_FILE
    _write_legacy_notop_h5(source, path)
    model = model_lib.build_model(small_config(weights=str(path)))
    loaded = model_lib.base_model(model)
    for expected, actual in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    # A fresh random model differs, so the equality above is not an accident.
    other = model_lib.base_model(model_lib.build_model(small_config()))
    assert not np.array_equal(other.weights[0].numpy(), source.weights[0].numpy())


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"dense_W_1:0"]
        f["dense"].create_dataset("dense_W_1:0", data=np.zeros((2, 2)))
    with pytest.raises(model_lib.WeightsError, match="standard .*notop.h5 layout"):
        model_lib.build_model(small_config(weights=str(path)))
    with pytest.raises(model_lib.WeightsError, match="no such file"):
        model_lib.build_model(small_config(weights=str(tmp_path / "missing.h5")))


def test_imagenet_download_failure_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    with pytest.raises(model_lib.WeightsError) as error:
        model_lib.resolve_weights("imagenet", "vgg16", (128, 128))
    message = str(error.value)
    assert model_lib.NOTOP_WEIGHTS_FILE in message
    assert str(tmp_path / "keras_home" / "models") in message
    assert "--weights=/path/to/" in message and "--weights=none" in message


def test_imagenet_download_runs_under_a_socket_timeout(monkeypatch, tmp_path):
    # A network that accepts and never answers would hang a download without a socket
    # timeout (urllib sets none); with one, it fails like an offline machine.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    timeouts = []

    def unanswered(*args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise Exception(f"URL fetch failure: {TimeoutError('timed out')}")

    monkeypatch.setattr(keras.utils, "get_file", unanswered)
    before = socket.getdefaulttimeout()
    with pytest.raises(model_lib.WeightsError, match="could not download"):
        model_lib.resolve_weights("imagenet", "vgg16", (128, 128))
    [timeout] = timeouts
    assert timeout is not None and 0 < timeout <= 60
    assert socket.getdefaulttimeout() == before  # Put back for the rest of the process.


def test_weights_none_warns_about_freezing(caplog):
    with caplog.at_level(logging.WARNING):
        model_lib.build_model(small_config())
    assert "--freeze_layers=0" in caplog.text


def test_augmenter_wrapper_trains_with_it_and_saves_without(tmp_path):
    model = model_lib.build_model(small_config(dropout=0.0))
    flip = keras.layers.RandomFlip("horizontal", seed=1)
    wrapped = model_lib.with_augmenter(model, flip)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        wrapped(images, training=False).numpy(), model(images).numpy(), atol=1e-6
    )
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert not any(isinstance(layer, keras.layers.RandomFlip) for layer in reloaded.layers)
    np.testing.assert_allclose(reloaded(images).numpy(), model(images).numpy(), atol=1e-6)


def test_train_config_builds_the_model_defaults():
    # TrainConfig's model fields default to ModelConfig's (one definition, in models/).
    from trainer.training import config

    train = config.TrainConfig(records_dir="records", model_dir="model", recipe="none")
    assert train.model_config() == model_lib.ModelConfig()
