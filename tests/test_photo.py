"""Tests for records.photo: the graph prepare eagerly and in tf.data, the Lanczos shrink
(the DCT scale it decodes at is tested in test_photo_header.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import make_jpeg_bytes
from records import photo
from records.photo import StoreSettings


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("max_short_side", [None, 24])
def test_prepare_is_the_same_eagerly_and_inside_dataset_map(max_short_side):
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(3).integers(0, 255, (40, 56, 3), np.uint8)
    inputs = [
        make_jpeg_bytes(seed=1),
        _encode(Image.fromarray(pixels).convert("RGBA"), "PNG"),
        _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes()),
        b"",
    ]
    settings = StoreSettings(max_short_side)
    mapped = list(
        tf.data.Dataset.from_tensor_slices(inputs)
        .map(lambda data: photo.prepare(data, settings))
        .as_numpy_iterator()
    )
    for data, in_map in zip(inputs, mapped):
        eager = photo.prepare(tf.constant(data), settings)
        for key, value in eager.items():
            assert np.array_equal(value.numpy(), in_map[key]), key


def _lanczos3_reference(image: tf.Tensor, size) -> np.ndarray:
    resized = tf.image.resize(image, size, method="lanczos3", antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8).numpy()


@pytest.mark.parametrize(
    "shape, size",
    [
        ((188, 250, 3), (160, 213)),
        ((375, 500, 3), (160, 213)),
        ((97, 61, 3), (40, 25)),
        ((50, 3, 3), (20, 1)),
        ((9, 9, 3), (9, 4)),
    ],
)
def test_shrink_is_tf_image_resize_lanczos3_bit_for_bit(shape, size):
    # A faster route through the same op must not change a stored pixel: same weights,
    # same sums, so exactly equal (not close), eagerly and inside Dataset.map.
    image = tf.constant(np.random.default_rng(sum(shape)).integers(0, 256, shape, np.uint8))
    expected = _lanczos3_reference(image, size)
    assert np.array_equal(photo._shrink(image, tf.constant(size)).numpy(), expected)
    mapped = tf.data.Dataset.from_tensors(image).map(lambda x: photo._shrink(x, tf.constant(size)))
    assert np.array_equal(next(mapped.as_numpy_iterator()), expected)


@pytest.mark.slow
def test_shrink_matches_lanczos3_on_real_photos(sample_dir):
    # Every 25th sample photo, decoded as prepare decodes it for 160 px (DCT 1/2).
    for path in sorted(sample_dir.glob("*.jpg"))[::25]:
        image = tf.io.decode_jpeg(path.read_bytes(), channels=3, ratio=2)
        height, width = image.shape[:2]
        if min(height, width) <= 160:
            continue
        size = [int(side) for side in photo._resized_size(height, width, 160)]
        resized = photo._shrink(image, tf.constant(size)).numpy()
        assert np.array_equal(resized, _lanczos3_reference(image, size)), path.name
