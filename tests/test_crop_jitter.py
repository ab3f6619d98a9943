"""Tests for pipeline/crop_jitter.py: the one sampler both training crops draw from."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline import crop_augment, crop_jitter, decode, fused


@pytest.mark.parametrize("strength", [0.0, 0.6, 1.0, crop_jitter.CROP_JITTER.max_strength])
def test_fused_window_and_decoded_box_are_one_draw(strength):
    # The same numbers give the fused decode's window (whole pixels of the recorded size)
    # and the decode-once box (fractions of the image): the same crop within a pixel, the
    # same flip and the same jitter. A range or a formula changed on one side only fails.
    side = 96
    uniforms = crop_jitter.stateless_uniforms(500, tf.constant([4, 2], tf.int64))
    sizes = tf.fill([500], side)
    # Output as big as the image: DCT ratio 1, so the window is in the image's pixels.
    params = fused.sample_augmentation(sizes, sizes, uniforms, side, strength)
    assert (np.array(decode.RATIOS)[params["ratio_index"].numpy()] == 1).all()
    boxes, scale, offset = (t.numpy() for t in crop_augment.sample_boxes(uniforms, strength))
    top, x1, bottom, x2 = boxes.T
    left, right = np.minimum(x1, x2), np.maximum(x1, x2)
    window = params["window"].numpy() / side
    np.testing.assert_allclose(window[:, 0], top, atol=1.5 / side)
    np.testing.assert_allclose(window[:, 1], left, atol=1.5 / side)
    np.testing.assert_allclose(window[:, 2], bottom - top, atol=1.5 / side)
    np.testing.assert_allclose(window[:, 3], right - left, atol=1.5 / side)
    np.testing.assert_array_equal(params["flip"].numpy(), x1 > x2)
    np.testing.assert_array_equal(params["scale"].numpy(), scale)
    np.testing.assert_array_equal(params["offset"].numpy(), offset)


def test_sample_follows_the_ranges():
    ranges = crop_jitter.CROP_JITTER
    uniforms = crop_jitter.stateless_uniforms(4000, tf.constant([1, 2], tf.int64))
    draw = crop_jitter.sample(uniforms, 1.0, 1.0, 1.0, whole_pixels=False)
    area = (draw.heights * draw.widths).numpy()
    aspect = (draw.widths / draw.heights).numpy()
    assert area.min() >= ranges.min_area - 1e-4 and area.min() < ranges.min_area + 0.01
    assert aspect.max() <= ranges.max_aspect_change + 1e-4
    assert aspect.max() > ranges.max_aspect_change - 0.05
    scale = draw.scale.numpy()
    assert scale.min() >= 1 - ranges.contrast - 1e-6 and scale.max() <= 1 + ranges.contrast + 1e-6
    # offset = 127.5 (1 - scale) + brightness shift + 0.5.
    shift = (draw.offset - 127.5 * (1.0 - draw.scale) - 0.5).numpy()
    assert np.abs(shift).max() <= ranges.brightness * 255 + 1e-3
    assert np.abs(shift).max() > ranges.brightness * 255 * 0.95


@pytest.mark.parametrize("strength", [-1.0, crop_jitter.CROP_JITTER.max_strength + 0.01, 2.0])
def test_strength_out_of_range_rejected(strength):
    uniforms = crop_jitter.stateless_uniforms(2, tf.constant([0, 0], tf.int64))
    with pytest.raises(ValueError, match="augment strength must be in 0..1.54"):
        crop_jitter.sample(uniforms, 40.0, 30.0, strength, whole_pixels=True)
    with pytest.raises(ValueError, match="strength"):
        crop_augment.sample_boxes(uniforms, strength)


def test_jitter_to_uint8_rounds_saturates_and_batches():
    image = tf.constant([[[-10.0, 0.4, 0.6], [127.2, 254.7, 300.0]]])  # [1, 2, 3]
    plain = crop_jitter.jitter_to_uint8(image, tf.constant(2.0), tf.constant(0.5), jitter=False)
    assert plain.dtype == tf.uint8
    np.testing.assert_array_equal(plain.numpy(), [[[0, 0, 1], [127, 255, 255]]])
    one = crop_jitter.jitter_to_uint8(image, tf.constant(0.5), tf.constant(10.5))
    np.testing.assert_array_equal(one.numpy(), [[[5, 10, 10], [74, 137, 160]]])
    batch = tf.stack([image, image * 0.5])
    scale, offset = tf.constant([0.5, 2.0]), tf.constant([10.5, -20.0])
    batched = tf.data.Dataset.from_tensors((batch, scale, offset)).map(crop_jitter.jitter_to_uint8)
    out = next(iter(batched)).numpy()
    np.testing.assert_array_equal(out[0], one.numpy())
    np.testing.assert_array_equal(
        out[1],
        crop_jitter.jitter_to_uint8(image * 0.5, tf.constant(2.0), tf.constant(-20.0)).numpy(),
    )
