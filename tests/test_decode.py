"""Tests for pipeline.decode: eager and inside tf.data, ratio choice, fused augmentation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import make_jpeg_bytes
from pipeline import decode


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
