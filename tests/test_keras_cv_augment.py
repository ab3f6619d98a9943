"""Tests for pipeline.keras_cv_augment: the keras-cv augmenter on batches, eagerly and in tf.data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline import keras_cv_augment as augment


def _batch(dtype=tf.uint8) -> tf.Tensor:
    images = tf.random.stateless_uniform([4, 32, 40, 3], [0, 1], 0, 255)
    return tf.cast(images, dtype)


@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
def test_augmenter_keeps_shape_and_range_and_changes_images(dtype):
    augmenter = augment.make_augmenter(strength=1.0, seed=1)
    images = _batch(dtype)
    out = augmenter(images, training=True)
    assert out.shape == images.shape
    out = out.numpy()
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3
    assert not np.allclose(out, tf.cast(images, tf.float32).numpy())


def test_augmenter_is_identity_outside_training():
    augmenter = augment.make_augmenter(seed=1)
    images = _batch(tf.float32)
    np.testing.assert_allclose(augmenter(images, training=False).numpy(), images.numpy())


def test_augmenter_inside_dataset_map_returns_uint8_batches():
    augmenter = augment.make_augmenter(strength=0.5, seed=2)
    labels = tf.constant([0, 1, 0, 1], tf.int32)
    dataset = tf.data.Dataset.from_tensors((_batch(), labels)).map(
        lambda x, y: (augment.to_uint8(augmenter(x, training=True)), y)
    )
    images, out_labels = next(iter(dataset))
    assert images.dtype == tf.uint8 and images.shape == (4, 32, 40, 3)
    np.testing.assert_array_equal(out_labels.numpy(), labels.numpy())


def test_strength_zero_is_flip_only_and_negative_rejected():
    assert len(augment.make_augmenter(strength=0.0).layers[0].augmenters) == 1
    assert len(augment.make_augmenter(strength=1.0).layers[0].augmenters) == 4
    with pytest.raises(ValueError, match="strength"):
        augment.make_augmenter(strength=-0.1)


def test_to_uint8_rounds_and_saturates():
    values = tf.constant([-3.0, 0.4, 0.6, 254.6, 300.0])
    np.testing.assert_array_equal(augment.to_uint8(values).numpy(), [0, 0, 1, 255, 255])


def test_augmenter_in_a_model_augments_only_in_fit_and_round_trips(tmp_path):
    import keras

    inputs = keras.Input((32, 40, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(augment.make_augmenter(seed=3)(inputs))
    model = keras.Model(inputs, outputs)
    images = _batch(tf.float32)
    # Inference: the augmenter is the identity, so the output is the plain channel mean.
    np.testing.assert_allclose(
        model.predict(images, verbose=0), images.numpy().mean(axis=(1, 2)), rtol=1e-5
    )
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
