"""What a photo file's bytes are, read from its header before any pixel is decoded.

String and integer ops on the bytes (graph-safe, no decoding): the format by content, the
size each format's header claims, a JPEG's components and EXIF orientation (a PNG's from
its eXIf chunk), whether a JPEG or PNG ends with its end marker, and the DCT scale a JPEG
over the pixel limit is decoded at. ``inspect`` returns it all, with a status that says
whether the bytes may be decoded at all; ``records.photo.prepare`` acts on it.
"""

from __future__ import annotations

import functools

import tensorflow as tf

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
# How many JPEG marker segments and EXIF IFD0 entries are looked at: real files have a
# handful of segments before the scan and a few dozen IFD0 entries.
_MAX_SEGMENTS = 64
_MAX_IFD_ENTRIES = 64


def draft_scale(
    width: int, height: int, max_pixels: int = MAX_PIXELS, max_short_side: int | None = None
) -> int | None:
    """How much to reduce a ``width`` x ``height`` JPEG while decoding it (a DCT scale).

    The Python twin of ``_draft_scale``: 1 when it fits under ``max_pixels``; else the
    mildest scale that fits, or with ``max_short_side`` the strongest one whose shorter
    side still reaches it (the resize would discard the rest); None when not even 1/8 fits.
    """
    if width * height <= max_pixels:
        return 1
    fitting = [s for s in DRAFT_SCALES if (-(-width // s)) * (-(-height // s)) <= max_pixels]
    if not fitting:
        return None
    enough = [
        s
        for s in fitting
        if max_short_side and min(-(-width // s), -(-height // s)) >= max_short_side
    ]
    return max(enough) if enough else fitting[0]


# --- header parsing, on the bytes as a uint8 vector -----------------------------------


def _byte(raw: tf.Tensor, index) -> tf.Tensor:
    # raw is zero-padded; indices past the end read zeros rather than failing the op.
    index = tf.clip_by_value(tf.cast(index, tf.int64), 0, tf.size(raw, tf.int64) - 1)
    return tf.cast(tf.gather(raw, index), tf.int64)


def _uint(raw: tf.Tensor, index, size: int, little_endian) -> tf.Tensor:
    values = [_byte(raw, index + i) for i in range(size)]
    big = functools.reduce(lambda acc, v: acc * 256 + v, values)
    little = functools.reduce(lambda acc, v: acc * 256 + v, reversed(values))
    return tf.where(little_endian, little, big)


def _starts_with(data: tf.Tensor, prefix: bytes, offset: int = 0) -> tf.Tensor:
    return tf.strings.substr(data, offset, len(prefix)) == prefix


def _format(data: tf.Tensor) -> tf.Tensor:
    webp = tf.logical_and(_starts_with(data, b"RIFF"), _starts_with(data, b"WEBP", 8))
    checks = [
        (_starts_with(data, b"\xff\xd8\xff"), JPEG),
        (_starts_with(data, b"\x89PNG\r\n\x1a\n"), PNG),
        (_starts_with(data, b"GIF8"), GIF),
        (_starts_with(data, b"BM"), BMP),
        (webp, WEBP),
    ]
    code = tf.constant(UNKNOWN, tf.int32)
    for matches, value in reversed(checks):
        code = tf.where(matches, value, code)
    return code


def _archive(data: tf.Tensor) -> tf.Tensor:
    """Index into ``ARCHIVES``, or -1."""
    code = tf.constant(-1, tf.int32)
    for index, magic in reversed(list(enumerate(_ARCHIVE_MAGIC))):
        code = tf.where(_starts_with(data, magic), index, code)
    return code


def _jpeg_header(raw: tf.Tensor, length: tf.Tensor) -> dict[str, tf.Tensor]:
    """Walks the marker segments up to the scan: size, components, EXIF, scan start.

    Returns int64 scalars: height, width, components (of the first SOF; -1 when none),
    exif (offset of the TIFF header in APP1 "Exif\\0\\0", -1 when none), exif_end, scan
    (offset of the entropy-coded data after SOS, -1 when not reached).
    """
    minus_one = tf.constant(-1, tf.int64)

    def keep_going(position, count, height, width, components, exif, exif_end, scan):
        return tf.logical_and(
            tf.logical_and(scan < 0, count < _MAX_SEGMENTS), position + 4 <= length
        )

    def step(position, count, height, width, components, exif, exif_end, scan):
        marker = _byte(raw, position + 1)
        is_marker = tf.equal(_byte(raw, position), 0xFF)
        fill = tf.logical_and(is_marker, tf.equal(marker, 0xFF))  # padding before a marker
        segment = _byte(raw, position + 2) * 256 + _byte(raw, position + 3)
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        is_sof = (
            (marker >= 0xC0)
            & (marker <= 0xCF)
            & (marker != 0xC4)
            & (marker != 0xC8)
            & (marker != 0xCC)
            & (components < 0)
        )
        height = tf.where(is_sof, _uint(raw, position + 5, 2, False), height)
        width = tf.where(is_sof, _uint(raw, position + 7, 2, False), width)
        components = tf.where(is_sof, _byte(raw, position + 9), components)
        is_exif = tf.equal(marker, 0xE1) & (exif < 0)
        for offset, value in enumerate(b"Exif\x00\x00"):
            is_exif = is_exif & tf.equal(_byte(raw, position + 4 + offset), value)
        exif = tf.where(is_exif, position + 10, exif)
        exif_end = tf.where(is_exif, position + 2 + segment, exif_end)
        after = position + 2 + segment
        scan = tf.where(tf.equal(marker, 0xDA), after, scan)
        # Not a marker where one must be: malformed; stop without a scan.
        scan = tf.where(is_marker, scan, tf.constant(-2, tf.int64))
        position = tf.where(fill, position + 1, after)
        return position, count + 1, height, width, components, exif, exif_end, scan

    start = (tf.constant(2, tf.int64), tf.constant(0, tf.int64))
    result = tf.while_loop(keep_going, step, (*start, *([minus_one] * 6)))
    _, _, height, width, components, exif, exif_end, scan = result
    return {
        "height": height,
        "width": width,
        "components": components,
        "exif": exif,
        "exif_end": exif_end,
        "scan": scan,
    }


def _exif_orientation(raw: tf.Tensor, tiff: tf.Tensor, end: tf.Tensor) -> tf.Tensor:
    """The Orientation tag (1-8) of IFD0 of the TIFF structure at ``tiff``; 1 when none."""
    little = tf.logical_and(tf.equal(_byte(raw, tiff), 0x49), tf.equal(_byte(raw, tiff + 1), 0x49))
    ifd = tiff + _uint(raw, tiff + 4, 4, little)
    count = _uint(raw, ifd, 2, little)
    slots = tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64)
    entries = ifd + 2 + 12 * slots
    # Vectorised over the entries: tag (2 bytes), type (2), count (4), value (SHORT first).
    tags = _uint(raw, entries, 2, little)
    values = _uint(raw, entries + 8, 2, little)
    found = (slots < count) & tf.equal(tags, 0x0112) & (entries + 12 <= end) & (tiff >= 0)
    orientation = tf.reduce_max(tf.where(found, values, 0))
    valid = (orientation >= 1) & (orientation <= 8)
    return tf.cast(tf.where(valid, orientation, 1), tf.int32)


def _find(raw: tf.Tensor, pattern: bytes, start) -> tf.Tensor:
    """The first position of ``pattern`` in ``raw`` at or after ``start``, -1 if none
    (vectorised: one pass of elementwise compares)."""
    size = tf.size(raw, tf.int64) - len(pattern)
    positions = tf.range(tf.maximum(size, 0), dtype=tf.int64)
    hits = positions >= start
    for offset, value in enumerate(pattern):
        hits = hits & tf.equal(tf.gather(raw, positions + offset), value)
    first = tf.reduce_min(tf.where(hits, positions, tf.int64.max))
    return tf.where(tf.reduce_any(hits), first, -1)


def _contains(raw: tf.Tensor, pattern: bytes, start) -> tf.Tensor:
    return _find(raw, pattern, start) >= 0


def _png_orientation(raw: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation of a PNG's ``eXIf`` chunk (a TIFF structure, no "Exif" prefix)."""
    chunk = _find(raw, b"eXIf", 8)
    size = _uint(raw, chunk - 4, 4, False)
    return tf.where(chunk >= 0, _exif_orientation(raw, chunk + 4, chunk + 4 + size), 1)


def _complete(data, raw, length, fmt, scan) -> tf.Tensor:
    """False for a JPEG with no EOI after its scan, or a PNG with no IEND chunk."""

    def jpeg():
        # The common case, the EOI as the last two bytes, costs no search. Inside the scan
        # 0xFF is always followed by 0x00 or a restart marker, so EOI cannot occur early.
        ends = tf.strings.substr(data, tf.maximum(length - 2, 0), 2) == b"\xff\xd9"
        return tf.logical_and(scan >= 0, tf.logical_or(ends, _contains(raw, b"\xff\xd9", scan)))

    def png():
        ends = tf.strings.substr(data, tf.maximum(length - 8, 0), 4) == b"IEND"
        return tf.logical_or(ends, _contains(raw, b"IEND", 8))

    return tf.case(
        [(tf.equal(fmt, JPEG), jpeg), (tf.equal(fmt, PNG), png)],
        default=lambda: tf.constant(True),
    )


def _size(raw: tf.Tensor, fmt: tf.Tensor, jpeg: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) from the header of any supported format, int64."""
    chunk = _uint(raw, 12, 4, False)  # WebP: the first chunk's fourcc
    vp8l = [_byte(raw, 21 + i) for i in range(4)]
    webp_width = tf.case(
        [
            (tf.equal(chunk, 0x56503820), lambda: _uint(raw, 26, 2, True) % 16384),  # "VP8 "
            (
                tf.equal(chunk, 0x5650384C),  # "VP8L": 14-bit width - 1, height - 1
                lambda: 1 + (vp8l[1] % 64) * 256 + vp8l[0],
            ),
        ],
        default=lambda: 1 + _uint(raw, 24, 3, True),  # "VP8X"
    )
    webp_height = tf.case(
        [
            (tf.equal(chunk, 0x56503820), lambda: _uint(raw, 28, 2, True) % 16384),
            (
                tf.equal(chunk, 0x5650384C),
                lambda: 1 + (vp8l[3] % 16) * 1024 + vp8l[2] * 4 + vp8l[1] // 64,
            ),
        ],
        default=lambda: 1 + _uint(raw, 27, 3, True),
    )
    bmp_height = _uint(raw, 22, 4, True)
    bmp_height = tf.where(bmp_height >= 2**31, 2**32 - bmp_height, bmp_height)  # top-down
    heights = [jpeg["height"], _uint(raw, 20, 4, False), _uint(raw, 8, 2, True), bmp_height]
    widths = [jpeg["width"], _uint(raw, 16, 4, False), _uint(raw, 6, 2, True)]
    widths.append(_uint(raw, 18, 4, True))
    index = tf.clip_by_value(fmt, 0, len(FORMATS) - 1)
    height = tf.gather(tf.stack([*heights, webp_height]), index)
    width = tf.gather(tf.stack([*widths, webp_width]), index)
    return height, width


def _draft_scale(height, width, max_pixels: int, max_short_side: int | None) -> tf.Tensor:
    """Graph twin of ``draft_scale``: the DCT scale, 0 when not even 1/8 fits."""
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
      (JPEG; -1 otherwise), orientation (int32 1-8), scale (int64 DCT scale, 1 unless
      reduced; 0 when too large).
    """
    data = tf.convert_to_tensor(data, tf.string)
    length = tf.cast(tf.strings.length(data), tf.int64)
    raw = tf.concat([tf.io.decode_raw(data, tf.uint8), tf.zeros([16], tf.uint8)], 0)
    # Zero-padded for the magic checks: substr fails on a position past the end.
    head = tf.strings.join([tf.strings.substr(data, 0, 16), b"\x00" * 16])
    fmt = _format(head)
    archive = _archive(head)
    jpeg = _jpeg_header(raw, length)
    height, width = _size(raw, fmt, jpeg)
    is_jpeg = tf.equal(fmt, JPEG)
    orientation = tf.case(
        [
            (is_jpeg, lambda: _exif_orientation(raw, jpeg["exif"], jpeg["exif_end"])),
            # A PNG is scanned for its eXIf chunk only when it is one (a pass over the file).
            (tf.equal(fmt, PNG), lambda: _png_orientation(raw)),
        ],
        default=lambda: tf.constant(1, tf.int32),
    )
    pixels = height * width
    scale = tf.where(
        pixels <= max_pixels,
        tf.constant(1, tf.int64),
        _draft_scale(height, width, max_pixels, max_short_side),
    )
    too_large = tf.logical_or(tf.equal(scale, 0), (pixels > max_pixels) & ~is_jpeg)
    complete = _complete(data, raw, length, fmt, jpeg["scan"])
    status = tf.constant(OK, tf.int32)
    for failed, code in [
        (tf.logical_not(complete), TRUNCATED),
        (too_large, TOO_LARGE),
        (tf.equal(fmt, UNKNOWN), NOT_IMAGE),
        (archive >= 0, ARCHIVE),
        (tf.equal(length, 0), EMPTY),
    ]:
        status = tf.where(failed, code, status)
    return {
        "status": status,
        "format": fmt,
        "archive": archive,
        "height": height,
        "width": width,
        "components": tf.where(is_jpeg, jpeg["components"], -1),
        "orientation": orientation,
        "scale": tf.where(too_large, tf.constant(0, tf.int64), scale),
    }
