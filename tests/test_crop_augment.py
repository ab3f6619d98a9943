"""Tests for pipeline/crop_augment.py: host and accelerator crops agree, eagerly and in graphs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import crop_augment, crop_jitter


def _images(count=6, side=36, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (count, side, side, 3)), tf.uint8)


def test_boxes_follow_the_crop_distribution():
    uniforms = tf.random.stateless_uniform([4000, crop_jitter.NUM_UNIFORMS], [1, 2])
    boxes, scale, offset = (t.numpy() for t in crop_augment.sample_boxes(uniforms, 1.0))
    top, x1, bottom, x2 = boxes.T
    left, right = np.minimum(x1, x2), np.maximum(x1, x2)
    height, width = bottom - top, right - left
    assert (top >= 0).all() and (bottom <= 1 + 1e-6).all()
    assert (left >= 0).all() and (right <= 1 + 1e-6).all()
    area = height * width
    assert area.min() >= 0.35 - 1e-4 and area.max() <= 1 + 1e-6
    # Clipping a side to 1 can only bring the aspect closer to 1.
    assert (width / height).min() >= 0.75 - 1e-4 and (width / height).max() <= 4 / 3 + 1e-4
    assert 0.45 < (x1 > x2).mean() < 0.55  # flipped half the time
    assert scale.min() >= 0.85 - 1e-6 and scale.max() <= 1.15 + 1e-6

    boxes, scale, offset = (t.numpy() for t in crop_augment.sample_boxes(uniforms, 0.0))
    assert np.all((boxes == [0, 0, 1, 1]).all(1) | (boxes == [0, 1, 1, 0]).all(1))
    assert np.allclose(scale, 1) and np.allclose(offset, 0.5)


def test_bilinear_crops_match_crop_and_resize_also_under_xla():
    images = _images()
    uniforms = tf.random.stateless_uniform([6, crop_jitter.NUM_UNIFORMS], [3, 4])
    boxes, _, _ = crop_augment.sample_boxes(uniforms, 1.0)
    expected = tf.image.crop_and_resize(images, boxes, tf.range(6), (32, 32)).numpy()
    eager = crop_augment.bilinear_crops(images, boxes, (32, 32)).numpy()
    compiled = tf.function(
        lambda x, b: crop_augment.bilinear_crops(x, b, (32, 32)), jit_compile=True
    )(images, boxes).numpy()
    np.testing.assert_allclose(eager, expected, atol=0.02)
    np.testing.assert_allclose(compiled, expected, atol=0.02)


def test_host_batch_augment_eagerly_and_in_dataset_map():
    images = _images()
    seed = tf.constant([5, 6], tf.int64)
    eager = crop_augment.augment_batch(images, seed, 32, 1.0)
    assert eager.shape == (6, 32, 32, 3) and eager.dtype == tf.uint8
    mapped = next(
        iter(
            tf.data.Dataset.from_tensors((images, seed)).map(
                lambda x, s: crop_augment.augment_batch(x, s, 32, 1.0)
            )
        )
    )
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())
    other = crop_augment.augment_batch(images, tf.constant([7, 8], tf.int64), 32, 1.0)
    assert not np.array_equal(eager.numpy(), other.numpy())
    # Strength 0: the whole image resized (align-corners sampling), maybe mirrored.
    plain = crop_augment.augment_batch(images, seed, 32, 0.0).numpy().astype(int)
    whole = tf.image.crop_and_resize(images, [[0, 0, 1, 1]] * 6, tf.range(6), (32, 32))
    whole = np.floor(whole.numpy() + 0.5).astype(int)
    for got, want in zip(plain, whole):
        assert np.abs(got - want).max() <= 1 or np.abs(got - want[:, ::-1]).max() <= 1


def test_layer_trains_with_crops_and_passes_inference_images_through():
    layer = crop_augment.DecodedCropAugment((32, 32), seed=1)
    images = _images()
    trained = layer(images, training=True)
    assert trained.shape == (6, 32, 32, 3) and trained.dtype == tf.uint8
    again = layer(images, training=True)
    assert not np.array_equal(trained.numpy(), again.numpy())  # fresh crops each call
    small = _images(side=32)
    np.testing.assert_array_equal(layer(small, training=False).numpy(), small.numpy())
    assert layer(images, training=False).shape == (6, 32, 32, 3)

    inputs = keras.Input((None, None, 3), dtype="uint8")
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, 32, 32, 3)
    config = layer.get_config()
    assert config["image_size"] == (32, 32) and config["seed"] == 1


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_layer_and_host_use_the_same_augmentation(strength):
    # Same uniforms in, same pixels out (within rounding): the two placements differ only
    # in where the work runs.
    images = _images()
    uniforms = tf.random.stateless_uniform([6, crop_jitter.NUM_UNIFORMS], [9, 9])
    boxes, scale, offset = crop_augment.sample_boxes(uniforms, strength)
    host = tf.image.crop_and_resize(images, boxes, tf.range(6), (32, 32))
    accelerator = crop_augment.bilinear_crops(images, boxes, (32, 32))
    host_u8 = crop_jitter.jitter_to_uint8(host, scale, offset).numpy().astype(int)
    acc_u8 = crop_jitter.jitter_to_uint8(accelerator, scale, offset).numpy().astype(int)
    assert np.abs(host_u8 - acc_u8).max() <= 1
