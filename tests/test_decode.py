"""Tests for pipeline.decode: eager and inside tf.data, ratio choice, fused augmentation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import decode
from tests.conftest import make_jpeg_bytes


def _map_one(fn, encoded: bytes) -> np.ndarray:
    """Runs ``fn`` inside Dataset.map (graph mode) on one encoded image."""
    return next(iter(tf.data.Dataset.from_tensors(encoded).map(fn))).numpy()


@pytest.mark.parametrize("shape", [(48, 64), (300, 200), (1030, 770)])
@pytest.mark.parametrize("image_size", [(128, 128), (64, 96)])
def test_decode_and_resize_shape_dtype_eager_and_in_map(shape, image_size):
    encoded = make_jpeg_bytes(*shape, seed=3)
    eager = decode.decode_and_resize(tf.constant(encoded), image_size).numpy()
    mapped = _map_one(lambda e: decode.decode_and_resize(e, image_size), encoded)
    assert eager.shape == (*image_size, 3) and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, mapped)
    assert 0 < eager.mean() < 255 and eager.std() > 1  # real content, not a blank image


@pytest.mark.parametrize(
    "height,width,target,expected",
    [
        (48, 64, 128, 1),  # small: upscaled, never DCT-downscaled
        (255, 300, 128, 1),  # 255 // 2 = 127 < 128
        (256, 300, 128, 2),
        (375, 500, 128, 2),  # the typical Kaggle photo
        (800, 1000, 128, 4),  # 800 // 8 = 100 < 128
        (1024, 1100, 128, 8),
        (1024, 1100, 64, 8),  # 8 is the largest libjpeg offers
    ],
)
def test_choose_ratio_keeps_decoded_size_at_least_target(height, width, target, expected):
    ratio = int(decode.choose_ratio(height, width, target, target))
    assert ratio == expected
    assert height // ratio >= target or ratio == 1


def test_choose_ratio_vectorised_and_capped():
    ratios = decode.choose_ratio(
        tf.constant([100, 600, 2000]), tf.constant([100, 600, 2000]), 128, 128
    )
    np.testing.assert_array_equal(ratios.numpy(), [1, 4, 8])
    capped = decode.choose_ratio(tf.constant([600, 2000]), tf.constant([600, 2000]), 128, 128, 2)
    np.testing.assert_array_equal(capped.numpy(), [2, 2])


def test_large_image_uses_ratio_path_and_matches_full_decode():
    encoded = make_jpeg_bytes(1030, 770, seed=5)
    assert int(decode.choose_ratio(1030, 770, 128, 128)) == 4
    fast = decode.decode_and_resize(tf.constant(encoded), 128).numpy()
    # Exactly the 1/4 DCT decode, resized.
    quarter = tf.io.decode_jpeg(encoded, channels=3, ratio=4, dct_method="INTEGER_FAST")
    assert quarter.shape[0] >= 128 and quarter.shape[1] >= 128
    expected = tf.cast(
        tf.clip_by_value(tf.image.resize(quarter, (128, 128)) + 0.5, 0, 255), tf.uint8
    )
    np.testing.assert_array_equal(fast, expected.numpy())
    # And it still looks like the full-resolution decode.
    full = tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), (128, 128), antialias=True)
    correlation = np.corrcoef(fast.astype(float).ravel(), full.numpy().ravel())[0, 1]
    assert correlation > 0.9


def test_max_useful_ratio():
    assert decode.max_useful_ratio(None, 128) == 8
    assert decode.max_useful_ratio(160, 128) == 1  # --max_short_side 160 records
    assert decode.max_useful_ratio(512, (128, 128)) == 4
    assert decode.max_useful_ratio(2000, 64) == 8


def test_decode_and_resize_without_ratio_branch_matches():
    encoded = make_jpeg_bytes(150, 210, seed=2)
    with_branch = decode.decode_and_resize(tf.constant(encoded), 128).numpy()
    without = decode.decode_and_resize(tf.constant(encoded), 128, max_ratio=1).numpy()
    np.testing.assert_array_equal(with_branch, without)


def _png_bytes(height, width) -> bytes:
    array = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["jpeg", "png", "gif", "bmp"])
def test_decode_image_any_formats_eager_and_in_map(kind):
    if kind == "jpeg":
        encoded = make_jpeg_bytes(90, 70, seed=1)
    else:
        array = np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=kind.upper())
        encoded = buffer.getvalue()
    eager = decode.decode_image_any(tf.constant(encoded), (32, 48)).numpy()
    mapped = _map_one(lambda e: decode.decode_image_any(e, (32, 48)), encoded)
    assert eager.shape == (32, 48, 3) and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, mapped)


def test_decode_crop_flip_is_seeded_and_varies():
    encoded = tf.constant(make_jpeg_bytes(375, 500, seed=9))
    first = decode.decode_crop_flip(encoded, 128, tf.constant([1, 2])).numpy()
    again = decode.decode_crop_flip(encoded, 128, tf.constant([1, 2])).numpy()
    other = decode.decode_crop_flip(encoded, 128, tf.constant([3, 4])).numpy()
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
        image = decode.decode_crop_flip(encoded, 128, tf.constant([seed, 0]), strength=0.0).numpy()
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
        seeds.map(lambda s: decode.decode_crop_flip(tf.constant(encoded), target, s, 1.0))
        .batch(40)
        .get_single_element()
        .numpy()
    )
    assert images.shape == (40, target, target, 3)
    assert len({image.tobytes() for image in images}) > 30


def test_sample_augmentation_windows_inside_image():
    heights = tf.constant([375, 1000, 160, 50])
    widths = tf.constant([500, 800, 213, 40])
    uniforms = tf.random.stateless_uniform([4, decode.NUM_UNIFORMS], [0, 1])
    params = decode.sample_augmentation(heights, widths, uniforms, 128, 1.0)
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
        decode.decode_crop_flip(tf.constant(make_jpeg_bytes()), 32, tf.constant([0, 0]), -1.0)


def test_jitter_to_uint8_rounds_saturates_and_batches():
    image = tf.constant([[[-10.0, 0.4, 0.6], [127.2, 254.7, 300.0]]])  # [1, 2, 3]
    plain = decode.jitter_to_uint8(image, tf.constant(2.0), tf.constant(0.5), jitter=False)
    assert plain.dtype == tf.uint8
    np.testing.assert_array_equal(plain.numpy(), [[[0, 0, 1], [127, 255, 255]]])
    one = decode.jitter_to_uint8(image, tf.constant(0.5), tf.constant(10.5))
    np.testing.assert_array_equal(one.numpy(), [[[5, 10, 10], [74, 137, 160]]])
    batch = tf.stack([image, image * 0.5])
    scale, offset = tf.constant([0.5, 2.0]), tf.constant([10.5, -20.0])
    batched = tf.data.Dataset.from_tensors((batch, scale, offset)).map(decode.jitter_to_uint8)
    out = next(iter(batched)).numpy()
    np.testing.assert_array_equal(out[0], one.numpy())
    np.testing.assert_array_equal(
        out[1], decode.jitter_to_uint8(image * 0.5, tf.constant(2.0), tf.constant(-20.0)).numpy()
    )
