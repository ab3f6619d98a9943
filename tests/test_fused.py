"""Tests for pipeline.fused: the crop-window training decode, eagerly and inside Dataset.map."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_jpeg_bytes
from pipeline import decode, fused


def test_decode_crop_flip_is_seeded_and_varies():
    encoded = tf.constant(make_jpeg_bytes(375, 500, seed=9))
    first = fused.decode_crop_flip(encoded, 128, tf.constant([1, 2])).numpy()
    again = fused.decode_crop_flip(encoded, 128, tf.constant([1, 2])).numpy()
    other = fused.decode_crop_flip(encoded, 128, tf.constant([3, 4])).numpy()
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
        image = fused.decode_crop_flip(encoded, 128, tf.constant([seed, 0]), strength=0.0).numpy()
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
        seeds.map(lambda s: fused.decode_crop_flip(tf.constant(encoded), target, s, 1.0))
        .batch(40)
        .get_single_element()
        .numpy()
    )
    assert images.shape == (40, target, target, 3)
    assert len({image.tobytes() for image in images}) > 30


def test_sample_augmentation_windows_inside_image():
    heights = tf.constant([375, 1000, 160, 50])
    widths = tf.constant([500, 800, 213, 40])
    uniforms = tf.random.stateless_uniform([4, fused.NUM_UNIFORMS], [0, 1])
    params = fused.sample_augmentation(heights, widths, uniforms, 128, 1.0)
    ratios = np.array(decode.RATIOS)[params["ratio_index"].numpy()]
    windows = params["window"].numpy()
    for (top, left, h, w), ratio, height, width in zip(
        windows, ratios, heights.numpy(), widths.numpy()
    ):
        assert h >= 1 and w >= 1 and top >= 0 and left >= 0
        assert top + h <= -(-height // ratio) and left + w <= -(-width // ratio)
    assert ratios[1] >= 2 and ratios[2] == 1  # big image downscaled, small one not


def test_negative_strength_rejected():
    with pytest.raises(ValueError, match="strength"):
        fused.decode_crop_flip(tf.constant(make_jpeg_bytes()), 32, tf.constant([0, 0]), -1.0)


def test_jitter_to_uint8_rounds_saturates_and_batches():
    image = tf.constant([[[-10.0, 0.4, 0.6], [127.2, 254.7, 300.0]]])  # [1, 2, 3]
    plain = fused.jitter_to_uint8(image, tf.constant(2.0), tf.constant(0.5), jitter=False)
    assert plain.dtype == tf.uint8
    np.testing.assert_array_equal(plain.numpy(), [[[0, 0, 1], [127, 255, 255]]])
    one = fused.jitter_to_uint8(image, tf.constant(0.5), tf.constant(10.5))
    np.testing.assert_array_equal(one.numpy(), [[[5, 10, 10], [74, 137, 160]]])
    batch = tf.stack([image, image * 0.5])
    scale, offset = tf.constant([0.5, 2.0]), tf.constant([10.5, -20.0])
    batched = tf.data.Dataset.from_tensors((batch, scale, offset)).map(fused.jitter_to_uint8)
    out = next(iter(batched)).numpy()
    np.testing.assert_array_equal(out[0], one.numpy())
    np.testing.assert_array_equal(
        out[1], fused.jitter_to_uint8(image * 0.5, tf.constant(2.0), tf.constant(-20.0)).numpy()
    )
