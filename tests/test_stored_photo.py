"""Tests for records.stored_photo: what gets stored for good, odd and bad image bytes."""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import make_big_jpeg, make_damaged_jpeg, make_jpeg_bytes
from records import photo_header, stored_photo, writer
from records.photo import StoreSettings
from records.photo_batches import BadImage


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
    prepared = stored_photo.prepare(data)
    assert prepared.encoded == data
    assert (prepared.height, prepared.width) == (48, 64)
    assert prepared.conversion is None and not prepared.resized


def test_progressive_jpeg_is_kept_and_decodes():
    rgb = Image.fromarray(np.full((40, 56, 3), (10, 200, 30), np.uint8))
    data = _encode(rgb, "JPEG", progressive=True, quality=95)
    prepared = stored_photo.prepare(data)
    assert prepared.encoded == data
    assert _decode_eager_and_in_map(prepared.encoded).shape == (40, 56, 3)


def test_grayscale_jpeg_becomes_rgb():
    gray = Image.fromarray(np.full((30, 20), 77, np.uint8), mode="L")
    prepared = stored_photo.prepare(_encode(gray, "JPEG", quality=95))
    assert prepared.conversion == "JPEG L -> RGB"
    assert Image.open(io.BytesIO(prepared.encoded)).mode == "RGB"
    decoded = _decode_eager_and_in_map(prepared.encoded)
    assert decoded.shape == (30, 20, 3)
    assert np.abs(decoded.astype(int) - 77).max() <= 3


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    # CMYK (0, 255, 255, 0) is pure red.
    cmyk = Image.new("CMYK", (24, 16), (0, 255, 255, 0))
    prepared = stored_photo.prepare(_encode(cmyk, "JPEG", quality=95))
    assert prepared.conversion == "JPEG CMYK -> RGB"
    assert Image.open(io.BytesIO(prepared.encoded)).mode == "RGB"
    decoded = _decode_eager_and_in_map(prepared.encoded)
    assert decoded.shape == (16, 24, 3)
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(0), (255, 0, 0), atol=6)


def test_png_named_jpg_is_converted_with_alpha_on_white():
    pixels = np.zeros((20, 30, 4), np.uint8)
    pixels[..., 2] = 255  # blue ...
    pixels[:, :15, 3] = 255  # ... opaque on the left, transparent on the right
    prepared = stored_photo.prepare(_encode(Image.fromarray(pixels, mode="RGBA"), "PNG"))
    assert prepared.conversion == "PNG -> JPEG"
    decoded = _decode_eager_and_in_map(prepared.encoded).astype(int)
    assert (prepared.height, prepared.width) == decoded.shape[:2] == (20, 30)
    np.testing.assert_allclose(decoded[:, :10].reshape(-1, 3).mean(0), (0, 0, 255), atol=8)
    np.testing.assert_allclose(decoded[:, 20:].reshape(-1, 3).mean(0), (255, 255, 255), atol=8)


def test_gif_contributes_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    prepared = stored_photo.prepare(buffer.getvalue())
    assert prepared.conversion == "GIF -> JPEG"
    decoded = _decode_eager_and_in_map(prepared.encoded)
    np.testing.assert_allclose(decoded.reshape(-1, 3).mean(0), (255, 0, 0), atol=8)


@pytest.mark.parametrize("keep", [0.5, 0.9, -2])  # -2: only the end-of-image marker lost
def test_truncated_jpeg_is_rejected(keep):
    data = make_jpeg_bytes(64, 64, seed=3)
    cut = data[: int(len(data) * keep)] if keep > 0 else data[:keep]
    with pytest.raises(BadImage, match="truncated JPEG"):
        stored_photo.prepare(cut)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, this is a text file\n" * 4, "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 200, "truncated JPEG"),  # JPEG magic, then garbage
    ],
)
def test_non_images_are_rejected_with_a_reason(data, reason):
    with pytest.raises(BadImage, match=reason):
        stored_photo.prepare(data)


@pytest.mark.slow
def test_max_short_side_shrinks_and_never_upscales():
    data = make_jpeg_bytes(120, 200, seed=4)
    prepared = stored_photo.prepare(data, max_short_side=60, jpeg_quality=80)
    assert prepared.resized and prepared.conversion is None
    assert (prepared.height, prepared.width) == (60, 100)
    assert _decode_eager_and_in_map(prepared.encoded).shape == (60, 100, 3)
    # Already small enough: the original bytes, untouched.
    small = stored_photo.prepare(data, max_short_side=120)
    assert small.encoded == data and not small.resized
    # The longer side rounded (451 * 160 / 300 = 240.53); a shorter side already within
    # the limit is kept, however long the other.
    for (height, width), limit, stored in [((451, 300), 160, (241, 160)), ((1, 1000), 10, None)]:
        data = make_jpeg_bytes(height, width, seed=5)
        prepared = stored_photo.prepare(data, max_short_side=limit)
        assert (prepared.height, prepared.width) == (stored or (height, width))
        assert prepared.resized == (stored is not None)


def test_jpeg_quality_changes_the_reencoded_size():
    data = make_jpeg_bytes(160, 160, seed=5, quality=100)
    low = stored_photo.prepare(data, max_short_side=128, jpeg_quality=30)
    high = stored_photo.prepare(data, max_short_side=128, jpeg_quality=95)
    assert len(low.encoded) < len(high.encoded)


def test_prepare_many_reports_instead_of_raising_in_order():
    class Source:
        def __init__(self, data=None, error=None):
            self.data, self.error = data, error

        def read(self):
            if self.error:
                raise self.error
            return self.data

    data = make_jpeg_bytes(seed=6)
    sha = hashlib.sha256(data).hexdigest()
    cut = data[:100]
    damaged = make_damaged_jpeg()
    tasks = [
        (Source(data), sha),
        (Source(data), "0" * 64),
        (Source(error=OSError(5, "Input/output error")), sha),
        (Source(cut), hashlib.sha256(cut).hexdigest()),
        (Source(damaged), hashlib.sha256(damaged).hexdigest()),
        (Source(data), sha),
    ]
    read = writer.checked_reader(lambda task: task[1], lambda task: task[0].read())
    results = list(stored_photo.prepare_many(tasks, read, StoreSettings(), parallel=2))
    assert [status for status, _ in results] == ["ok", "skip", "skip", "skip", "skip", "ok"]
    assert results[0][1].encoded == data and results[5][1].encoded == data
    assert results[1][1] == "file changed while the conversion ran (sha256 differs from pass 1)"
    assert results[2][1].startswith("unreadable") and "Input/output error" in results[2][1]
    assert "truncated JPEG" in results[3][1]
    assert results[4][1].startswith("corrupt JPEG (")
    # The same words one photo at a time.
    with pytest.raises(BadImage) as error:
        stored_photo.prepare(damaged)
    assert str(error.value) == results[4][1]


def _oriented_jpeg(orientation: int) -> bytes:
    """A 40 wide x 20 tall JPEG, red top-left quadrant, blue elsewhere, with EXIF Orientation."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


# Where the stored top-left quadrant is seen once the EXIF orientation is applied (the
# EXIF 2.3 definitions; 6 is the usual phone photo held upright, 8 upside down), and
# whether width and height swap.
@pytest.mark.parametrize(
    "orientation, corner, swapped",
    [
        (2, "top-right", False),  # mirrored left-right
        (3, "bottom-right", False),  # rotated 180
        (4, "bottom-left", False),  # mirrored top-bottom
        (5, "top-left", True),  # transposed
        (6, "top-right", True),  # rotated 90 clockwise: the stored left side is the top
        (7, "bottom-right", True),  # transversed
        (8, "bottom-left", True),  # rotated 90 counter-clockwise
    ],
)
def test_exif_orientation_is_applied_and_stored_upright(orientation, corner, swapped):
    data = _oriented_jpeg(orientation)
    prepared = stored_photo.prepare(data)
    height, width = (40, 20) if swapped else (20, 40)
    assert (prepared.height, prepared.width) == (height, width)
    assert prepared.conversion.startswith(f"EXIF orientation {orientation} -> ")
    assert prepared.conversion.endswith("(stored upright)")
    decoded = _decode_eager_and_in_map(prepared.encoded).astype(int)
    assert decoded.shape == (height, width, 3)
    rows = slice(0, height // 2) if corner.startswith("top") else slice(height // 2, height)
    cols = slice(0, width // 2) if corner.endswith("left") else slice(width // 2, width)
    inner = decoded[rows, cols][2:-2, 2:-2]  # away from the JPEG-blurred edges
    np.testing.assert_allclose(inner.reshape(-1, 3).mean(0), (255, 0, 0), atol=12)
    red = (decoded[..., 0] > 128).mean()
    assert 0.2 < red < 0.3  # one quadrant red, the rest blue, whatever the orientation


def test_orientation_6_description_and_no_op_orientations():
    prepared = stored_photo.prepare(_oriented_jpeg(6))
    assert prepared.conversion == "EXIF orientation 6 -> rotated 90° clockwise (stored upright)"
    upright_already = _oriented_jpeg(1)
    kept = stored_photo.prepare(upright_already)
    assert kept.encoded == upright_already and kept.conversion is None
    invalid = _oriented_jpeg(9)  # not an orientation: the pixels are kept as stored
    kept = stored_photo.prepare(invalid)
    assert kept.encoded == invalid and kept.conversion is None and kept.width == 40


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (IHDR, CRC fixed) claims width x height."""
    data = bytearray(_encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = crc.to_bytes(4, "big")
    return bytes(data)


def test_huge_header_is_refused_before_decoding():
    # The file holds one pixel: decoding it would fail as a corrupt PNG, so "too large"
    # shows the header was checked first.
    data = _png_claiming(9000, 9000)
    assert len(data) < 100 and Image.open(io.BytesIO(data)).size == (9000, 9000)
    reason = "image too large: 9000x9000 = 81000000 pixels (limit 65000000)"
    assert photo_header.MAX_PIXELS == 65_000_000
    with pytest.raises(BadImage) as error:
        stored_photo.prepare(data)
    assert str(error.value) == reason
    small_png = _encode(Image.new("RGB", (48, 64)), "PNG")
    with pytest.raises(BadImage, match=r"image too large: 48x64 = 3072 pixels \(limit 100\)"):
        stored_photo.prepare(small_png, max_pixels=100)


def test_archive_bytes_are_a_nested_archive():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("cat.1.jpg", make_jpeg_bytes())
    with pytest.raises(BadImage, match="nested archive: a zip archive, not an image"):
        stored_photo.prepare(buffer.getvalue())


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "dog.big.jpg"
    make_big_jpeg(path)
    return path


def test_big_jpeg_is_decoded_reduced_not_skipped(big_jpeg):
    data = big_jpeg.read_bytes()
    assert len(data) < 3_000_000 and Image.open(big_jpeg).size == (12000, 12000)
    # Over Pillow's own decompression-bomb limit too: Pillow's guard must not skip it.
    assert 12000 * 12000 > 89_478_485 and 12000 * 12000 > photo_header.MAX_PIXELS

    small = stored_photo.prepare(data, max_short_side=160)
    assert (small.width, small.height) == (160, 160) and small.resized
    assert small.conversion == (
        "JPEG 12000x12000 decoded at 1/8 scale (1500x1500, pixel limit 65000000)"
    )
    pixels = _decode_eager_and_in_map(small.encoded)
    assert pixels.shape == (160, 160, 3)
    # The picture, not noise: red top-left corner, light grey bottom-right.
    np.testing.assert_allclose(pixels[:4, :4].mean((0, 1)), (200, 40, 40), atol=25)
    np.testing.assert_allclose(pixels[-4:, -4:].mean((0, 1)), (220, 220, 220), atol=25)

    full = stored_photo.prepare(data)
    assert (full.width, full.height) == (6000, 6000) and not full.resized
    assert full.conversion == (
        "JPEG 12000x12000 decoded at 1/2 scale (6000x6000, pixel limit 65000000)"
    )
    assert tf.io.decode_jpeg(full.encoded, channels=3).numpy().shape == (6000, 6000, 3)


def test_big_jpeg_is_decoded_at_the_reduced_scale(big_jpeg):
    # Memory follows the decoded size (a benchmark's business); here, that the graph asks
    # libjpeg for the reduced decode: the strongest that still leaves the short side.
    data = tf.constant(big_jpeg.read_bytes())
    for max_short_side, scale in ((160, 8), (None, 2), (2000, 4)):
        fields = photo_header.inspect(data, photo_header.MAX_PIXELS, max_short_side)
        assert int(fields["scale"]) == scale, max_short_side
        assert int(fields["status"]) == photo_header.OK


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(_encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_too_large_even_reduced_and_big_pngs_keep_the_project_message():
    with pytest.raises(BadImage) as error:
        stored_photo.prepare(_jpeg_claiming(65000, 65000))
    assert str(error.value) == (
        "image too large: 65000x65000 = 4225000000 pixels (limit 65000000), "
        "even decoded at 1/8 scale"
    )
    # 400 MP: over twice Pillow's limit, where Pillow itself raised DecompressionBombError.
    with pytest.raises(BadImage) as error:
        stored_photo.prepare(_png_claiming(20000, 20000))
    assert str(error.value) == "image too large: 20000x20000 = 400000000 pixels (limit 65000000)"
    assert "decompression bomb" not in str(error.value)
