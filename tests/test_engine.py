"""Tests for trainer/models/engine.py: Keras or LiteRT for a frozen network."""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.models import engine
from trainer.models import model as model_lib


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    """The project's model (preprocessing, VGG16 base, head) at 32 px, random weights."""
    keras.utils.set_random_seed(0)
    return model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8, pooling="avg")
    )


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3)).astype(np.uint8)


@keras.saving.register_keras_serializable(package="test_engine")
class BesselLayer(keras.layers.Layer):
    """A layer whose op (BesselI1e) has no TFLite kernel: the converter refuses it."""

    def call(self, inputs):
        return tf.math.special.bessel_i1e(inputs)


def test_litert_gives_keras_outputs_within_float32_round_off(tiny_model, tmp_path):
    # 7 images: one full chunk of CHUNK=4 and a padded one, so padding and trimming count.
    images = _images(7)
    lite = engine.runner(tiny_model, "litert", len(images), str(tmp_path))
    assert lite.engine == "litert"
    got = lite.predict_on_batch(images)
    expected = tiny_model.predict_on_batch(images)
    assert got.shape == expected.shape == (7, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Another batch size on the same runner, and a single image (all padding but one).
    np.testing.assert_allclose(
        lite.predict_on_batch(images[:1]), expected[:1], rtol=1e-5, atol=1e-6
    )


def test_the_flatbuffer_is_converted_once_per_model(tiny_model, tmp_path, monkeypatch):
    engine.runner(tiny_model, "litert", 1, str(tmp_path))
    cached = engine.cache_path(tiny_model, str(tmp_path))
    assert os.listdir(tmp_path) == [os.path.basename(cached)]

    def no_conversion(model):
        raise AssertionError("converted again although the flatbuffer is cached")

    monkeypatch.setattr(engine, "float32_flatbuffer", no_conversion)
    again = engine.runner(tiny_model, "litert", 1, str(tmp_path))
    assert again.engine == "litert"
    np.testing.assert_allclose(
        again.predict_on_batch(_images(2)),
        tiny_model.predict_on_batch(_images(2)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_cache_key_follows_the_weights(tiny_model):
    other = keras.models.clone_model(tiny_model)
    other.set_weights(tiny_model.get_weights())
    assert engine.model_key(other) == engine.model_key(tiny_model)
    weights = other.get_weights()
    weights[-1] = weights[-1] + 1e-3  # The output bias: one weight of ~15 million.
    other.set_weights(weights)
    assert engine.model_key(other) != engine.model_key(tiny_model)
    assert engine.model_key(tiny_model, extra="shards") != engine.model_key(tiny_model)


def test_auto_converts_only_for_enough_images_or_a_cached_flatbuffer(tiny_model, tmp_path):
    few, many = 10, engine.AUTO_MIN_IMAGES
    assert engine.choose("auto", tiny_model, few, str(tmp_path)) == "keras"
    assert engine.choose("auto", tiny_model, many, str(tmp_path)) == "litert"
    assert engine.choose("auto", tiny_model, many - 1, None) == "keras"
    engine.runner(tiny_model, "litert", few, str(tmp_path))  # now cached
    assert engine.choose("auto", tiny_model, few, str(tmp_path)) == "litert"
    assert engine.choose("keras", tiny_model, many, str(tmp_path)) == "keras"


def test_a_model_litert_cannot_convert_runs_on_keras_with_one_line(tmp_path, caplog):
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(BesselLayer()(inputs))
    model = keras.Model(inputs, pooled, name="bessel")
    with caplog.at_level(logging.WARNING):
        runner = engine.runner(model, "litert", 5, str(tmp_path))
    assert runner.engine == "keras"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "bessel cannot run on LiteRT, using keras instead" in warnings[0]
    assert "BesselI1e" in warnings[0] and "\n" not in warnings[0]
    assert not os.listdir(tmp_path)  # nothing cached from a failed conversion
    images = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(runner.predict_on_batch(images), model.predict_on_batch(images))


def test_an_unknown_engine_is_refused_naming_the_choices(tiny_model):
    with pytest.raises(ValueError, match="engine='tpu': expected one of auto, keras, litert"):
        engine.runner(tiny_model, "tpu", 1)
