"""Tests for pipeline.fused: the crop-window training decode, eagerly and inside Dataset.map."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_jpeg_bytes
from pipeline import crop_jitter, decode, fused


def decode_crop_flip(encoded, image_size, seed, strength=1.0):
    """One image through the training pipeline's fused decode (``fused.augment_batch``).

    The batch of one reads the size from the JPEG header, as the records' recorded size.
    """
    height, width = decode.jpeg_shape(encoded)
    return fused.augment_batch(
        encoded[None],
        tf.reshape(height, [1]),
        tf.reshape(width, [1]),
        tf.cast(seed, tf.int64),
        decode.size_pair(image_size),
        strength,
        max_ratio=8,
    )[0]


def test_decode_crop_flip_is_seeded_and_varies():
    encoded = tf.constant(make_jpeg_bytes(375, 500, seed=9))
    first = decode_crop_flip(encoded, 128, tf.constant([1, 2])).numpy()
    again = decode_crop_flip(encoded, 128, tf.constant([1, 2])).numpy()
    other = decode_crop_flip(encoded, 128, tf.constant([3, 4])).numpy()
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    eval_image = decode.decode_and_resize(encoded, 128).numpy()
    assert not np.array_equal(first, eval_image)


def test_decode_crop_flip_strength_zero_is_whole_image_maybe_flipped():
    encoded = tf.constant(make_jpeg_bytes(375, 500, seed=4))
    eval_image = decode.decode_and_resize(encoded, 128).numpy()
    flipped_seen = plain_seen = False
    for seed in range(8):
        image = decode_crop_flip(encoded, 128, tf.constant([seed, 0]), strength=0.0).numpy()
        if np.array_equal(image, eval_image):
            plain_seen = True
        else:
            np.testing.assert_array_equal(image, eval_image[:, ::-1])
            flipped_seen = True
    assert plain_seen and flipped_seen


@pytest.mark.parametrize(
    "shape,target", [((517, 389), 64), ((389, 517), 128), ((130, 129), 128), ((40, 30), 32)]
)
def test_sampled_windows_always_decode_in_map(shape, target):
    # Many random windows on odd sizes and every ratio: none may fall outside the
    # downscaled image (decode_and_crop_jpeg would fail), every output is target-sized.
    encoded = make_jpeg_bytes(*shape, seed=11)
    seeds = tf.data.Dataset.range(40).map(lambda i: tf.stack([i, i * 7 + 1]))
    images = (
        seeds.map(lambda s: decode_crop_flip(tf.constant(encoded), target, s, 1.0))
        .batch(40)
        .get_single_element()
        .numpy()
    )
    assert images.shape == (40, target, target, 3)
    assert len({image.tobytes() for image in images}) > 30


def test_sample_augmentation_windows_inside_image():
    heights = tf.constant([375, 1000, 160, 50])
    widths = tf.constant([500, 800, 213, 40])
    uniforms = tf.random.stateless_uniform([4, crop_jitter.NUM_UNIFORMS], [0, 1])
    params = fused.sample_augmentation(heights, widths, uniforms, 128, 1.0)
    ratios = np.array(decode.RATIOS)[params["ratio_index"].numpy()]
    windows = params["window"].numpy()
    for (top, left, h, w), ratio, height, width in zip(
        windows, ratios, heights.numpy(), widths.numpy()
    ):
        assert h >= 1 and w >= 1 and top >= 0 and left >= 0
        assert top + h <= -(-height // ratio) and left + w <= -(-width // ratio)
    assert ratios[1] >= 2 and ratios[2] == 1  # big image downscaled, small one not
