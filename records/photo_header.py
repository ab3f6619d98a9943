"""What a photo file's bytes are, read from its header before any pixel is decoded.

String and integer ops on the bytes (graph-safe, no decoding): the format by content, the
size each format's header claims, a JPEG's components, the EXIF orientation
(``records.photo_segments``: from IFD0 of the EXIF in its own segment, a JPEG's APP1, a
PNG's eXIf chunk, a WebP's EXIF chunk), whether a JPEG or PNG ends with its end marker,
and the DCT scale a JPEG over the pixel limit is decoded at. ``inspect`` returns it all,
with a status that says whether the bytes may be decoded at all; ``records.photo.prepare``
acts on it.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from records import photo_segments

# The largest picture decoded, in pixels (width * height), checked from the header
# before any decoding. Real photos stay below it: 48/50 MP phone cameras (8000x6000),
# 64 MP ones (9248x6936 = 64.1 MP) and 61 MP full-frame cameras (9504x6336). Decoded as
# RGB that is at most ~195 MB per decode; a larger header is refused.
MAX_PIXELS = 65_000_000

# The reductions libjpeg decodes to directly (1/1, 1/2, 1/4, 1/8 of each side).
DRAFT_SCALES: tuple[int, ...] = (1, 2, 4, 8)

# Format codes (``fields["format"]``) and names; UNKNOWN for anything else.
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "WebP")
JPEG, PNG, GIF, BMP, WEBP = range(len(FORMATS))
UNKNOWN = -1
ARCHIVES: tuple[str, ...] = ("zip", "gzip", "7z", "rar")
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07")

# Status codes (``fields["status"]``): OK, or why the bytes are not decoded at all.
STATUSES: tuple[str, ...] = (
    "ok",
    "empty",
    "not an image",
    "nested archive",
    "image too large",
    "truncated",
    "cannot decode",
)
OK, EMPTY, NOT_IMAGE, ARCHIVE, TOO_LARGE, TRUNCATED, CORRUPT = range(len(STATUSES))
# prepare never returns CORRUPT itself: its decode op fails on damaged data, and callers
# that run it over many photos (tf.data with ignore_errors) mark the dropped rows so.

# EXIF Orientation value -> what is done to show the picture upright.
ORIENTATION_FIXES = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored along the main diagonal",
    6: "rotated 90° clockwise",
    7: "mirrored along the anti-diagonal",
    8: "rotated 90° counter-clockwise",
}
# The magic bytes and every fixed-position header field lie in the first 32 bytes.
_HEADER_BYTES = 32


# --- header parsing, on the bytes as a uint8 vector -----------------------------------


# Each format's magic bytes: (offset, bytes) that must all match.
_MAGIC = {
    JPEG: ((0, b"\xff\xd8\xff"),),
    PNG: ((0, b"\x89PNG\r\n\x1a\n"),),
    GIF: ((0, b"GIF8"),),
    BMP: ((0, b"BM"),),
    WEBP: ((0, b"RIFF"), (8, b"WEBP")),
}


def _format(data: tf.Tensor) -> tf.Tensor:
    code = tf.constant(UNKNOWN, tf.int32)
    for value, parts in reversed(_MAGIC.items()):
        matches = tf.reduce_all(
            [photo_segments.starts_with(data, magic, offset) for offset, magic in parts]
        )
        code = tf.where(matches, value, code)
    return code


def format_name(data: bytes) -> str:
    """The format's name from the magic bytes ("image" when unknown), in Python: for words
    about bytes the graph refused."""
    for value, parts in _MAGIC.items():
        if all(data[offset : offset + len(magic)] == magic for offset, magic in parts):
            return FORMATS[value]
    return "image"


def _archive(data: tf.Tensor) -> tf.Tensor:
    """Index into ``ARCHIVES``, or -1."""
    code = tf.constant(-1, tf.int32)
    for index, magic in reversed(list(enumerate(_ARCHIVE_MAGIC))):
        code = tf.where(photo_segments.starts_with(data, magic), index, code)
    return code


def _orientation(data: tf.Tensor, length: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """``photo_segments.orientation`` of any file: 1 for formats without EXIF (GIF, BMP)."""
    codes = [FORMATS.index(name) for name in photo_segments.FORMATS_WITH_EXIF]
    index = tf.reduce_sum(tf.where(tf.equal(fmt, codes), tf.range(1, len(codes) + 1), 0))
    return tf.switch_case(  # branch 0: none of them
        index,
        [lambda: tf.constant(1, tf.int32)]
        + [
            functools.partial(photo_segments.orientation, data, length, name)
            for name in photo_segments.FORMATS_WITH_EXIF
        ],
    )


def _complete(data: tf.Tensor, length: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """False for a JPEG with no EOI marker, or a PNG with no IEND chunk.

    The common case, the marker at the very end, is one comparison; a file with bytes after
    its marker (some cameras append data) is searched. (A JPEG cut short after an EXIF
    thumbnail's EOI passes here and fails in the decoder: refused as damaged instead.)
    """

    is_jpeg, is_png = tf.equal(fmt, JPEG), tf.equal(fmt, PNG)
    # The marker where it normally is: the last 2 bytes (JPEG) or 12 (PNG's IEND chunk).
    # The last 12 bytes, zero-padded in front for a shorter file (substr must not run off).
    padded = tf.strings.join(
        [b"\x00" * 12, tf.strings.substr(data, tf.maximum(length - 12, 0), 12)]
    )
    last = tf.strings.substr(padded, tf.strings.length(padded) - 12, 12)
    ends = tf.where(
        is_jpeg,
        tf.strings.substr(last, 10, 2) == b"\xff\xd9",
        tf.strings.substr(last, 4, 4) == b"IEND",
    )

    def search():
        return (
            tf.where(
                is_jpeg,
                photo_segments.find(data, b"\xff\xd9", 3),
                photo_segments.find(data, b"IEND", 8),
            )
            >= 0
        )

    return tf.cond(~(is_jpeg | is_png) | ends, lambda: tf.constant(True), search)


def _size(header: tf.Tensor, fmt: tf.Tensor, jpeg: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) from the header of any supported format, int64.

    ``header`` is the file's first bytes, zero-padded; ``jpeg`` is TensorFlow's
    ``extract_jpeg_shape`` of a JPEG (its frame header can be anywhere).
    """
    png = photo_segments.integers(
        header, 16, tf.int32, 2, little_endian=False
    )  # IHDR: width, height
    gif = photo_segments.integers(header, 6, tf.uint16, 2, little_endian=True)  # logical screen
    bmp = photo_segments.integers(
        header, 18, tf.int32, 2, little_endian=True
    )  # height < 0: top-down
    chunk = tf.strings.substr(header, 12, 4)  # WebP: the first chunk's fourcc
    vp8 = photo_segments.integers(header, 26, tf.uint16, 2, little_endian=True) % 16384
    b = photo_segments.integers(
        header, 21, tf.uint8, 4, little_endian=True
    )  # VP8L: 14-bit sides - 1
    vp8l = tf.stack([1 + (b[1] % 64) * 256 + b[0], 1 + (b[3] % 16) * 1024 + b[2] * 4 + b[1] // 64])
    vp8x = 1 + tf.reduce_sum(
        tf.reshape(photo_segments.integers(header, 24, tf.uint8, 6, little_endian=True), [2, 3])
        * tf.constant([1, 256, 65536], tf.int64),
        axis=1,
    )
    webp = tf.where(tf.equal(chunk, "VP8 "), vp8, tf.where(tf.equal(chunk, "VP8L"), vp8l, vp8x))
    widths = tf.stack([jpeg[1], png[0], gif[0], bmp[0], webp[0]])
    heights = tf.stack([jpeg[0], png[1], gif[1], tf.abs(bmp[1]), webp[1]])
    index = tf.clip_by_value(fmt, 0, len(FORMATS) - 1)
    return tf.gather(heights, index), tf.gather(widths, index)


def _draft_scale(height, width, max_pixels: int, max_short_side: int | None) -> tf.Tensor:
    """How much to reduce a ``width`` x ``height`` JPEG while decoding it (a DCT scale).

    With ``max_short_side``: the strongest scale whose shorter side still reaches it, among
    those under ``max_pixels`` (libjpeg's scaled IDCT is a good low-pass filter, and
    cheaper: a 500x375 photo stored at 160 px is decoded at 250x188, then resized); else
    the mildest that fits under ``max_pixels`` (1 for any photo below it). 0 when not even
    1/8 fits.
    """
    scales = tf.constant(DRAFT_SCALES, tf.int64)
    reduced_h = -(-height // scales)
    reduced_w = -(-width // scales)
    fits = reduced_h * reduced_w <= max_pixels
    mildest = tf.reduce_min(tf.where(fits, scales, 1 << 30))
    enough = fits & (tf.minimum(reduced_h, reduced_w) >= (max_short_side or 1 << 30))
    strongest = tf.reduce_max(tf.where(enough, scales, 0))
    scale = tf.where(strongest > 0, strongest, mildest)
    return tf.where(tf.reduce_any(fits), scale, 0)


def inspect(data: tf.Tensor, max_pixels: int, max_short_side: int | None) -> dict[str, tf.Tensor]:
    """Everything known about the bytes before decoding them (scalar tensors).

    Returns:
      status (int32, ``STATUSES``), format (``FORMATS`` index or UNKNOWN), archive
      (``ARCHIVES`` index or -1), height/width (int64, as the header says), components
      (JPEG; -1 otherwise), orientation (int32 1-8), scale (int64 DCT scale a JPEG is
      decoded at, ``_draft_scale``; 1 for other formats; 0 when too large).
    """
    data = tf.convert_to_tensor(data, tf.string)
    length = tf.cast(tf.strings.length(data), tf.int64)
    # The first bytes, zero-padded: reading a field past the end of a short file gives
    # zeros, not an error (substr fails on a position past the end).
    header = tf.strings.join([tf.strings.substr(data, 0, _HEADER_BYTES), b"\x00" * _HEADER_BYTES])
    # Per-op overhead, not bytes, is what costs here (each small op ~ microseconds in a
    # tf.data map): the common photo, a JPEG ending with its EOI marker, takes a short path
    # that reads only its frame header and its EXIF.
    plain = photo_segments.starts_with(header, b"\xff\xd8\xff") & tf.equal(
        tf.strings.substr(data, tf.maximum(length - 2, 0), 2), b"\xff\xd9"
    )
    return tf.cond(
        plain,
        lambda: _plain_jpeg(data, length, max_pixels, max_short_side),
        lambda: _any_file(data, length, header, max_pixels, max_short_side),
    )


def _plain_jpeg(data: tf.Tensor, length, max_pixels: int, max_short_side: int | None) -> dict:
    shape = tf.io.extract_jpeg_shape(data, output_type=tf.int64)
    return _fields(
        status=tf.constant(OK, tf.int32),
        fmt=tf.constant(JPEG, tf.int32),
        archive=tf.constant(-1, tf.int32),
        height=shape[0],
        width=shape[1],
        components=shape[2],
        orientation=photo_segments.orientation(data, length, FORMATS[JPEG]),
        max_pixels=max_pixels,
        max_short_side=max_short_side,
    )


def _any_file(data, length, header, max_pixels: int, max_short_side: int | None) -> dict:
    fmt = _format(header)
    archive = _archive(header)
    is_jpeg = tf.equal(fmt, JPEG)
    complete = _complete(data, length, fmt)
    # A JPEG's frame (size, components) from TensorFlow's own header parser, run only on
    # bytes that passed the cheap checks: a broken header makes it fail, refusing the row.
    jpeg = tf.cond(
        is_jpeg & complete,
        lambda: tf.io.extract_jpeg_shape(data, output_type=tf.int64),
        lambda: tf.constant([0, 0, -1], tf.int64),
    )
    height, width = _size(header, fmt, jpeg)
    orientation = _orientation(data, length, fmt)
    status = tf.constant(OK, tf.int32)
    for failed, code in [
        (tf.logical_not(complete), TRUNCATED),
        (tf.equal(fmt, UNKNOWN), NOT_IMAGE),
        (archive >= 0, ARCHIVE),
        (tf.equal(length, 0), EMPTY),
    ]:
        status = tf.where(failed, code, status)
    return _fields(
        status,
        fmt,
        archive,
        height,
        width,
        tf.where(is_jpeg, jpeg[2], -1),
        orientation,
        max_pixels,
        max_short_side,
    )


def _fields(
    status, fmt, archive, height, width, components, orientation, max_pixels, max_short_side
) -> dict:
    """The fields ``inspect`` returns, with the size check (status TOO_LARGE, scale)."""
    # Only a JPEG can be decoded reduced; any other format over the limit is refused.
    scale = tf.where(
        tf.equal(fmt, JPEG),
        _draft_scale(height, width, max_pixels, max_short_side),
        tf.where(height * width <= max_pixels, tf.constant(1, tf.int64), 0),
    )
    too_large = tf.equal(scale, 0)
    return {
        "status": tf.where(too_large & tf.equal(status, OK), TOO_LARGE, status),
        "format": fmt,
        "archive": archive,
        "height": height,
        "width": width,
        "components": components,
        "orientation": orientation,
        "scale": tf.where(too_large, tf.constant(0, tf.int64), scale),
    }
