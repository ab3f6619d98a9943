"""How a photo file's bytes become what a record stores: the one definition, in TF ops.

``prepare`` is a graph-safe function of a scalar string tensor. Every path that turns a
photo into model input runs it: ``make_records`` (``records.writer``, through
``records.stored_photo``, the Python wrapper that gives a bad photo's reason in words),
``predict`` and the exported SavedModel's bytes signature (``pipeline.photos``, then
validation's ``pipeline.decode.decode_and_resize``) and the TFLite client helper. Being
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
   (1/2, 1/4, 1/8: ``photo_header._draft_scale``); any other format over it is refused.
3. A JPEG or PNG that ends before its end marker (EOI after the scan; IEND) is refused
   as truncated before decoding: decoders fail a whole batch on it, and a server must
   flag the one row instead.
4. The EXIF Orientation (TIFF IFD0 tag 0x0112, in a JPEG's first APP1 segment that holds
   EXIF, a PNG's eXIf chunk or a WebP's EXIF chunk; the same bytes anywhere else are
   ignored) is applied, so the stored picture is upright as a viewer shows it.
5. Pixels become 8-bit RGB: 16-bit samples rounded to 8 bits, transparency composited
   onto white.
6. A picture whose shorter side exceeds ``max_short_side`` is shrunk to it (Lanczos-3
   with antialiasing; ``_resized_size``), and whatever was changed is re-encoded as a
   baseline 4:2:0 JPEG at ``jpeg_quality``. An RGB JPEG that needs none of this is stored
   byte for byte.

Bytes that pass the checks but are damaged inside (JPEG has no checksum) make the decode
op fail; callers run batches through ``records.photo_batches`` (or, in a graph,
``pipeline.photos.photo_batch``), which refuse that photo alone.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from records import photo_header
from records.convert_options import ConvertOptions
from records.photo_header import DRAFT_SCALES, GIF, JPEG, MAX_PIXELS, OK, PNG


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


# EXIF orientation 1-8 -> (transpose?, row step, column step) that shows it upright:
# 6 (90° clockwise) is a transpose then a left-right flip, 8 a transpose then top-bottom.
_UPRIGHT = (
    (0, 1, 1),
    (0, 1, -1),
    (0, -1, -1),
    (0, -1, 1),
    (1, 1, 1),
    (1, 1, -1),
    (1, -1, -1),
    (1, -1, 1),
)


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """The picture as a viewer shows it (EXIF orientation 1-8).

    Two ops with data-dependent arguments, no branches: a transpose whose permutation and a
    strided slice whose steps (1 or -1 per axis) come from the table.
    """
    transpose, row_step, column_step = tf.unstack(
        tf.gather(tf.constant(_UPRIGHT, tf.int32), tf.clip_by_value(orientation - 1, 0, 7))
    )
    permutation = tf.where(tf.equal(transpose, 1), [1, 0, 2], [0, 1, 2])
    image = tf.transpose(image, permutation)
    # begin_mask/end_mask: each axis runs whole, in the direction of its step.
    upright = tf.strided_slice(
        image, [0, 0, 0], [0, 0, 0], tf.stack([row_step, column_step, 1]), begin_mask=7, end_mask=7
    )
    return tf.ensure_shape(upright, [None, None, 3])


def _resized_size(height, width, max_short_side: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) with the shorter side at ``max_short_side``, the longer rounded (half
    to even) and at least 1; ``prepare`` calls it only for a picture whose shorter side is
    longer (it never upscales)."""
    scale = max_short_side / tf.cast(tf.minimum(height, width), tf.float64)

    def longer(side):
        return tf.maximum(
            tf.constant(1, tf.int64), tf.cast(tf.round(tf.cast(side, tf.float64) * scale), tf.int64)
        )

    new_height = tf.where(height <= width, tf.constant(max_short_side, tf.int64), longer(height))
    new_width = tf.where(height <= width, longer(width), tf.constant(max_short_side, tf.int64))
    return new_height, new_width


def _along_rows(image: tf.Tensor, new_rows: tf.Tensor) -> tf.Tensor:
    """Lanczos-3 with antialiasing along axis 0 of [rows, columns, channels], float32 out.

    The ``ScaleAndTranslate`` op (``tf.image.resize``'s lanczos3) resizes rows first, a
    loop over whole rows that the compiler vectorizes, then columns, a scalar loop over
    every pixel's 3 channels that took ~2/3 of a 160-px conversion's time. Seen as one
    "pixel" per row with columns * channels "channels", the image needs only the first
    loop: the column pass is then a 1 -> 1 copy with weight 1.0.
    """
    shape = tf.shape(image)
    flat = tf.reshape(image, [1, shape[0], 1, shape[1] * shape[2]])
    scale = tf.stack([tf.cast(new_rows, tf.float32) / tf.cast(shape[0], tf.float32), 1.0])
    rows = tf.raw_ops.ScaleAndTranslate(
        images=flat,
        size=tf.stack([new_rows, 1]),
        scale=scale,
        translation=tf.zeros([2]),
        kernel_type="lanczos3",
        antialias=True,
    )
    return tf.reshape(rows, [new_rows, shape[1], shape[2]])


def _shrink(image: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, 3] -> uint8 at ``size`` [2]: Lanczos-3 with antialiasing.

    Bit for bit ``tf.image.resize(image, size, "lanczos3", antialias=True)`` (the same
    weights, from the same op, summed in the same order: rows, then columns), at about a
    third of its cost: each axis runs as rows (``_along_rows``), the columns through a
    transpose (tests/test_images.py compares the two on real photos).
    """
    rows = _along_rows(image, size[0])
    columns = _along_rows(tf.transpose(rows, [1, 0, 2]), size[1])
    resized = tf.transpose(columns, [1, 0, 2])
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def prepare(data: tf.Tensor, settings: StoreSettings, validate: bool = True) -> dict:
    """One photo's bytes -> the bytes a record stores, and what was done (graph-safe).

    Args:
      data: Scalar string tensor, the file's bytes.
      settings: The records' settings.
      validate: Decode a JPEG that is stored as it is, so that damaged data fails here
        (``make_records``). False skips that decode when the caller decodes the result
        anyway (predict, serving): the same bytes fail there instead.

    Returns:
      ``photo_header.inspect``'s fields plus: encoded (scalar string; empty unless status is OK),
      stored_height / stored_width (int64), resized and reencoded (bool).

    Raises:
      tf.errors.InvalidArgumentError: (When run) the decoder refused bytes that passed
        every check: damaged data.
    """
    fields = photo_header.inspect(data, settings.max_pixels, settings.max_short_side)
    ok = tf.equal(fields["status"], OK)
    oriented = fields["orientation"] > 1
    # Turned upright: the picture's size, and its size as decoded (reduced by the scale).
    swap = fields["orientation"] >= 5
    full_height = tf.where(swap, fields["width"], fields["height"])
    full_width = tf.where(swap, fields["height"], fields["width"])
    scale = tf.maximum(fields["scale"], 1)
    height, width = -(-full_height // scale), -(-full_width // scale)
    if settings.max_short_side:
        # The stored size follows from the picture's own size (_resized_size), whatever
        # the decode's scale: the reduced decode is never smaller than it.
        resized = tf.minimum(full_height, full_width) > settings.max_short_side
        new_height, new_width = _resized_size(full_height, full_width, settings.max_short_side)
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
                lambda: _shrink(image, tf.cast(tf.stack([new_height, new_width]), tf.int32)),
                lambda: image,
            )
        # Baseline, 4:2:0, no EXIF/ICC: the plainest JPEG every decoder reads.
        return tf.io.encode_jpeg(image, quality=settings.jpeg_quality)

    def keep():
        if not validate:
            return data
        # The decode only validates: at 1/8 scale libjpeg still reads every coefficient of
        # the entropy-coded data (what damage breaks) but skips most of the inverse DCT. A
        # data dependency (an empty substring whose length comes from it) keeps it from
        # being pruned, as a control dependency was.
        decoded = tf.io.decode_jpeg(data, channels=3, ratio=8)
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


# What ``prepare`` returns, by type (map_fn needs it before tracing).
FIELD_DTYPES = {
    "status": tf.int32,
    "format": tf.int32,
    "archive": tf.int32,
    "height": tf.int64,
    "width": tf.int64,
    "components": tf.int64,
    "orientation": tf.int32,
    "scale": tf.int64,
    "encoded": tf.string,
    "stored_height": tf.int64,
    "stored_width": tf.int64,
    "resized": tf.bool,
    "reencoded": tf.bool,
}


@functools.lru_cache(maxsize=16)
def prepare_batch_function(settings: StoreSettings):
    """``prepare`` over a batch of photos [N] in one traced call (``tf.map_fn``).

    One call per batch instead of per photo: the Python dispatch and the GIL are paid once
    for N photos, and the loop runs several photos at once on TensorFlow's threads. A photo
    the decoder refuses fails the whole call (``records.photo_batches.run`` runs that batch
    again photo by photo).
    """
    signature = {key: tf.TensorSpec([], dtype) for key, dtype in FIELD_DTYPES.items()}
    return tf.function(
        lambda data: tf.map_fn(
            lambda one: prepare(one, settings),
            data,
            fn_output_signature=signature,
            parallel_iterations=8,
        ),
        input_signature=[tf.TensorSpec([None], tf.string)],
        # The code is written with tf.cond/tf.case, not Python ifs on tensors: without
        # AutoGraph's source conversion the trace takes a fraction of the time.
        autograph=False,
    )
