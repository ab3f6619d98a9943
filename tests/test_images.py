"""Tests for records.images: what gets stored for good, odd and bad image bytes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from records import images
from tests.conftest import make_jpeg_bytes


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _decode_eager_and_in_map(encoded: bytes) -> np.ndarray:
    """Decodes like the pipeline does, eagerly and inside Dataset.map; both must agree."""
    eager = tf.io.decode_jpeg(encoded, channels=3).numpy()
    mapped = next(
        iter(tf.data.Dataset.from_tensors(encoded).map(lambda x: tf.io.decode_jpeg(x, channels=3)))
    ).numpy()
    np.testing.assert_array_equal(eager, mapped)
    return eager


def test_rgb_jpeg_is_stored_byte_for_byte():
    data = make_jpeg_bytes(48, 64, seed=1)
    prepared = images.prepare(data)
    assert prepared.encoded == data
    assert (prepared.height, prepared.width) == (48, 64)
    assert prepared.conversion is None and not prepared.resized


def test_progressive_jpeg_is_kept_and_decodes():
    rgb = Image.fromarray(np.full((40, 56, 3), (10, 200, 30), np.uint8))
    data = _encode(rgb, "JPEG", progressive=True, quality=95)
    prepared = images.prepare(data)
    assert prepared.encoded == data
    assert _decode_eager_and_in_map(prepared.encoded).shape == (40, 56, 3)


def test_grayscale_jpeg_becomes_rgb():
    gray = Image.fromarray(np.full((30, 20), 77, np.uint8), mode="L")
    prepared = images.prepare(_encode(gray, "JPEG", quality=95))
    assert prepared.conversion == "JPEG L -> RGB"
    assert Image.open(io.BytesIO(prepared.encoded)).mode == "RGB"
    decoded = _decode_eager_and_in_map(prepared.encoded)
    assert decoded.shape == (30, 20, 3)
    assert np.abs(decoded.astype(int) - 77).max() <= 3


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    # CMYK (0, 255, 255, 0) is pure red.
    cmyk = Image.new("CMYK", (24, 16), (0, 255, 255, 0))
    prepared = images.prepare(_encode(cmyk, "JPEG", quality=95))
    assert prepared.conversion == "JPEG CMYK -> RGB"
    assert Image.open(io.BytesIO(prepared.encoded)).mode == "RGB"
    decoded = _decode_eager_and_in_map(prepared.encoded)
    assert decoded.shape == (16, 24, 3)
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(0), (255, 0, 0), atol=6)


def test_png_named_jpg_is_converted_with_alpha_on_white():
    pixels = np.zeros((20, 30, 4), np.uint8)
    pixels[..., 2] = 255  # blue ...
    pixels[:, :15, 3] = 255  # ... opaque on the left, transparent on the right
    prepared = images.prepare(_encode(Image.fromarray(pixels, mode="RGBA"), "PNG"))
    assert prepared.conversion == "PNG -> JPEG"
    decoded = _decode_eager_and_in_map(prepared.encoded).astype(int)
    assert (prepared.height, prepared.width) == decoded.shape[:2] == (20, 30)
    np.testing.assert_allclose(decoded[:, :10].reshape(-1, 3).mean(0), (0, 0, 255), atol=8)
    np.testing.assert_allclose(decoded[:, 20:].reshape(-1, 3).mean(0), (255, 255, 255), atol=8)


def test_gif_contributes_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    prepared = images.prepare(buffer.getvalue())
    assert prepared.conversion == "GIF -> JPEG"
    decoded = _decode_eager_and_in_map(prepared.encoded)
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(0), (255, 0, 0), atol=8)


@pytest.mark.parametrize("keep", [0.5, 0.9, -2])  # -2: only the end-of-image marker lost
def test_truncated_jpeg_is_rejected(keep):
    data = make_jpeg_bytes(64, 64, seed=3)
    cut = data[: int(len(data) * keep)] if keep > 0 else data[:keep]
    with pytest.raises(images.BadImage, match="truncated JPEG"):
        images.prepare(cut)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, this is a text file\n" * 4, "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 200, "not an image"),  # JPEG magic, then garbage
    ],
)
def test_non_images_are_rejected_with_a_reason(data, reason):
    with pytest.raises(images.BadImage, match=reason):
        images.prepare(data)


def test_max_short_side_shrinks_and_never_upscales():
    data = make_jpeg_bytes(120, 200, seed=4)
    prepared = images.prepare(data, max_short_side=60, jpeg_quality=80)
    assert prepared.resized and prepared.conversion is None
    assert (prepared.height, prepared.width) == (60, 100)
    assert _decode_eager_and_in_map(prepared.encoded).shape == (60, 100, 3)
    # Already small enough: the original bytes, untouched.
    small = images.prepare(data, max_short_side=120)
    assert small.encoded == data and not small.resized
    assert images.resized_size(200, 120, 500) == (200, 120)
    assert images.resized_size(375, 500, 160) == (160, 213)
    assert images.resized_size(1000, 1, 10) == (1000, 1)


def test_jpeg_quality_changes_the_reencoded_size():
    data = make_jpeg_bytes(160, 160, seed=5, quality=100)
    low = images.prepare(data, max_short_side=128, jpeg_quality=30)
    high = images.prepare(data, max_short_side=128, jpeg_quality=95)
    assert len(low.encoded) < len(high.encoded)


def test_prepare_source_reports_instead_of_raising(tmp_path):
    class Source:
        def __init__(self, data=None, error=None):
            self.data, self.error = data, error

        def read(self):
            if self.error:
                raise self.error
            return self.data

    data = make_jpeg_bytes(seed=6)
    sha = hashlib.sha256(data).hexdigest()
    status, prepared = images.prepare_source((Source(data), sha, None, 90))
    assert status == "ok" and prepared.encoded == data
    assert images.prepare_source((Source(data), "0" * 64, None, 90)) == (
        "skip",
        "file changed while the conversion ran (sha256 differs from pass 1)",
    )
    status, reason = images.prepare_source(
        (Source(error=OSError(5, "Input/output error")), sha, None, 90)
    )
    assert status == "skip" and reason.startswith("unreadable") and "Input/output error" in reason
    cut = data[:100]
    status, reason = images.prepare_source((Source(cut), hashlib.sha256(cut).hexdigest(), None, 90))
    assert status == "skip" and "truncated" in reason
