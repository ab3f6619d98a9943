"""How a photo file's bytes become what a record stores: the one definition, in TF ops.

``prepare`` is a graph-safe function of a scalar string tensor. Every path that turns a
photo into model input runs it: ``make_records`` (``records.writer``, in a tf.data
map), ``predict`` and the exported SavedModel's bytes signature (``pipeline.photos``,
then validation's ``pipeline.decode.decode_and_resize``), the TFLite client helper, and
``records.images`` (the eager wrapper that gives a bad photo's reason in words). Being
TensorFlow ops, it runs unchanged inside a SavedModel graph with no Python, no Pillow
and no ``py_function``: there is no second copy of the rules to drift.

The rules, in order:

1. The format comes from the content (magic bytes), never from the name: JPEG
   (baseline, progressive, grayscale, CMYK), PNG (8/16-bit, grayscale, palette, alpha),
   GIF (its first frame), BMP, WebP. Empty bytes, an archive or anything else is refused
   with a status, not decoded.
2. The size is read from the header (string ops on the bytes) and checked against
   ``max_pixels`` *before* any pixel is decoded, so a few-KB file claiming 30000x30000
   cannot allocate gigabytes. A JPEG over it is decoded reduced in the DCT domain
   (1/2, 1/4, 1/8: ``draft_scale``); any other format over it is refused.
3. A JPEG or PNG that ends before its end marker (EOI after the scan; IEND) is refused
   as truncated before decoding: decoders fail a whole batch on it, and a server must
   flag the one row instead.
4. The JPEG's EXIF Orientation (APP1 segment, TIFF IFD0 tag 0x0112) is applied, so the
   stored picture is upright as a viewer shows it.
5. Pixels become 8-bit RGB: 16-bit samples rounded to 8 bits, transparency composited
   onto white.
6. A picture whose shorter side exceeds ``max_short_side`` is shrunk to it (Lanczos-3
   with antialiasing; ``resized_size``), and whatever was changed is re-encoded as a
   baseline 4:2:0 JPEG at ``jpeg_quality``. An RGB JPEG that needs none of this is stored
   byte for byte.

Bytes that pass the checks but are damaged inside (JPEG has no checksum) make the decode
op fail; callers in tf.data use ``ignore_errors`` and report the row.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from records.convert_options import ConvertOptions

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


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """How a records folder stores photos (``make_records --max_short_side/--jpeg_quality``).

    Attributes:
      max_short_side: Shrink pictures whose shorter side is longer (None: keep sizes).
      jpeg_quality: JPEG quality of every re-encoded picture.
      max_pixels: Decode at most this many pixels (see the module docstring).
    """

    max_short_side: int | None = None
    jpeg_quality: int = ConvertOptions.jpeg_quality
    max_pixels: int = MAX_PIXELS

    @classmethod
    def from_settings(cls, settings: dict) -> StoreSettings:
        """From a manifest's ``settings`` (make_records' options as JSON)."""
        return cls(
            max_short_side=settings.get("max_short_side"),
            jpeg_quality=int(settings.get("jpeg_quality", ConvertOptions.jpeg_quality)),
        )


def resized_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side at most ``max_short_side``; never upscales.

    The Python twin of ``_resized_size`` (the graph's), for plans and tests.
    """
    short = min(width, height)
    if max_short_side is None or short <= max_short_side:
        return width, height
    scale = max_short_side / short
    if width <= height:
        return max_short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_short_side


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


def _contains(raw: tf.Tensor, pattern: bytes, start) -> tf.Tensor:
    """Whether ``pattern`` occurs in ``raw`` at or after ``start`` (vectorised)."""
    size = tf.size(raw, tf.int64) - len(pattern)
    positions = tf.range(tf.maximum(size, 0), dtype=tf.int64)
    hits = positions >= start
    for offset, value in enumerate(pattern):
        hits = hits & tf.equal(tf.gather(raw, positions + offset), value)
    return tf.reduce_any(hits)


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


# --- decoding -------------------------------------------------------------------------


def _decode(data: tf.Tensor, fmt: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """uint8 RGB [h, w, 3] of any supported format (a JPEG at 1/``scale``)."""

    def jpeg():
        # The default (accurate) IDCT: these pixels are stored, not just looked at.
        branches = [
            (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r)) for r in DRAFT_SCALES
        ]
        index = tf.add_n([tf.cast(scale > s, tf.int32) for s in DRAFT_SCALES[:-1]])
        return tf.switch_case(index, branches)

    def gif():
        return tf.io.decode_gif(data)[0]  # the first frame

    def on_white(rgba, top: float):
        rgba = tf.cast(rgba, tf.float32) / top
        alpha = rgba[..., 3:]
        rgb = rgba[..., :3] * alpha + (1.0 - alpha)  # transparency onto white
        return tf.cast(tf.round(tf.clip_by_value(rgb, 0.0, 1.0) * 255.0), tf.uint8)

    def png():
        # 16 bits with alpha covers every PNG: 8-bit samples come back as v * 257 (exact),
        # so an opaque 8-bit PNG keeps its exact values; 16-bit ones are rounded.
        return on_white(tf.io.decode_png(data, channels=4, dtype=tf.uint16), 65535.0)

    def other():  # BMP, WebP: 8 bits; WebP decodes only to the channels it has.
        image = tf.io.decode_image(data, channels=0, expand_animations=False)
        channels = tf.shape(image)[2]
        opaque = tf.fill(tf.concat([tf.shape(image)[:2], [1]], 0), tf.constant(255, tf.uint8))
        rgba = tf.case(
            [
                (tf.equal(channels, 1), lambda: tf.concat([image, image, image, opaque], 2)),
                (tf.equal(channels, 3), lambda: tf.concat([image, opaque], 2)),
            ],
            default=lambda: image[..., :4],
        )
        return on_white(tf.ensure_shape(rgba, [None, None, 4]), 255.0)

    image = tf.case(
        [(tf.equal(fmt, JPEG), jpeg), (tf.equal(fmt, PNG), png), (tf.equal(fmt, GIF), gif)],
        default=other,
    )
    return tf.ensure_shape(image, [None, None, 3])


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """The picture as a viewer shows it (EXIF orientation 1-8)."""

    def transpose():
        return tf.transpose(image, [1, 0, 2])

    branches = [
        lambda: image,
        lambda: image[:, ::-1],  # 2
        lambda: image[::-1, ::-1],  # 3
        lambda: image[::-1],  # 4
        transpose,  # 5
        lambda: tf.image.rot90(image, k=3),  # 6: 90° clockwise
        lambda: transpose()[::-1, ::-1],  # 7
        lambda: tf.image.rot90(image, k=1),  # 8: 90° counter-clockwise
    ]
    return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), branches)


def _resized_size(height, width, max_short_side: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Graph twin of ``resized_size`` (tf.round rounds half to even, like Python's round)."""
    scale = max_short_side / tf.cast(tf.minimum(height, width), tf.float64)

    def longer(side):
        return tf.maximum(
            tf.constant(1, tf.int64), tf.cast(tf.round(tf.cast(side, tf.float64) * scale), tf.int64)
        )

    new_height = tf.where(height <= width, tf.constant(max_short_side, tf.int64), longer(height))
    new_width = tf.where(height <= width, longer(width), tf.constant(max_short_side, tf.int64))
    return new_height, new_width


def inspect(data: tf.Tensor, settings: StoreSettings) -> dict[str, tf.Tensor]:
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
    orientation = tf.where(is_jpeg, _exif_orientation(raw, jpeg["exif"], jpeg["exif_end"]), 1)
    pixels = height * width
    scale = tf.where(
        pixels <= settings.max_pixels,
        tf.constant(1, tf.int64),
        _draft_scale(height, width, settings.max_pixels, settings.max_short_side),
    )
    too_large = tf.logical_or(tf.equal(scale, 0), (pixels > settings.max_pixels) & ~is_jpeg)
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


def prepare(data: tf.Tensor, settings: StoreSettings, validate: bool = True) -> dict:
    """One photo's bytes -> the bytes a record stores, and what was done (graph-safe).

    Args:
      data: Scalar string tensor, the file's bytes.
      settings: The records' settings.
      validate: Decode a JPEG that is stored as it is, so that damaged data fails here
        (``make_records``). False skips that decode when the caller decodes the result
        anyway (predict, serving): the same bytes fail there instead.

    Returns:
      ``inspect``'s fields plus: encoded (scalar string; empty unless status is OK),
      stored_height / stored_width (int64), resized and reencoded (bool).

    Raises:
      tf.errors.InvalidArgumentError: (When run) the decoder refused bytes that passed
        every check: damaged data.
    """
    fields = inspect(data, settings)
    ok = tf.equal(fields["status"], OK)
    oriented = fields["orientation"] > 1
    # Sizes after a reduced decode, then turned upright.
    scale = tf.maximum(fields["scale"], 1)
    height, width = -(-fields["height"] // scale), -(-fields["width"] // scale)
    swap = fields["orientation"] >= 5
    height, width = tf.where(swap, width, height), tf.where(swap, height, width)
    if settings.max_short_side:
        resized = tf.minimum(height, width) > settings.max_short_side
        new_height, new_width = _resized_size(height, width, settings.max_short_side)
    else:
        resized = tf.constant(False)
        new_height, new_width = height, width
    new_height = tf.where(resized, new_height, height)
    new_width = tf.where(resized, new_width, width)
    as_is = (
        tf.equal(fields["format"], JPEG)
        & tf.equal(fields["components"], 3)
        & ~oriented
        & tf.equal(fields["scale"], 1)
        & ~resized
    )

    def convert():
        image = _orient(_decode(data, fields["format"], fields["scale"]), fields["orientation"])
        if settings.max_short_side:
            image = tf.cond(
                resized,
                lambda: tf.cast(
                    tf.round(
                        tf.clip_by_value(
                            tf.image.resize(
                                image,
                                tf.cast(tf.stack([new_height, new_width]), tf.int32),
                                method="lanczos3",
                                antialias=True,
                            ),
                            0.0,
                            255.0,
                        )
                    ),
                    tf.uint8,
                ),
                lambda: image,
            )
        # Baseline, 4:2:0, no EXIF/ICC: the plainest JPEG every decoder reads.
        return tf.io.encode_jpeg(image, quality=settings.jpeg_quality)

    def keep():
        if not validate:
            return data
        # The decode only validates; a data dependency (an empty substring whose length
        # comes from it) keeps it from being pruned, as a control dependency was.
        decoded = tf.io.decode_jpeg(data, channels=3)
        return tf.strings.join(
            [data, tf.strings.substr(data, 0, tf.minimum(tf.shape(decoded)[0], 0))]
        )

    encoded = tf.case(
        [(tf.logical_not(ok), lambda: tf.constant(b"")), (as_is, keep)], default=convert
    )
    return {
        **fields,
        "encoded": encoded,
        "stored_height": tf.where(ok, new_height, 0),
        "stored_width": tf.where(ok, new_width, 0),
        "resized": ok & resized,
        "reencoded": ok & ~as_is,
    }


@functools.lru_cache(maxsize=16)
def prepare_function(settings: StoreSettings, validate: bool = True):
    """``prepare`` as a traced ``tf.function`` of a scalar string, one per settings."""
    return tf.function(
        lambda data: prepare(data, settings, validate),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
