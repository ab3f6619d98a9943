"""A photo file's bytes as fields and segments, in TF string ops (graph-safe).

Reading integers and finding bytes in a file (``records.photo_header`` reads its header
with them), and the EXIF orientation read from its own segment: the file's segments are
walked (a JPEG's markers up to its scan, a PNG's chunks, a WebP's RIFF chunks) to the one
that holds EXIF, and the Orientation is read from IFD0 of its TIFF structure. The same
bytes anywhere else (a comment, an ICC profile, XMP, a MakerNote, a thumbnail's IFD) never
turn a photo.
"""

from __future__ import annotations

import functools

import tensorflow as tf

_ALL = -1  # substr length: to the end

# EXIF: a TIFF header ("II*\0" little-endian, "MM\0*" big-endian, then IFD0's offset) and
# IFD0, whose 12-byte entries (tag, type, count, value) hold the Orientation.
_EXIF_ID = b"Exif\x00\x00"  # how a JPEG's APP1 payload of EXIF starts
_TIFF_LITTLE, _TIFF_BIG = b"II*\x00", b"MM\x00*"
_ORIENTATION_TAG = 0x0112
_SHORT = 3  # the TIFF type of Orientation's value
# Segments are walked one at a time (~20-30 us a step on this 2-core machine under load),
# each step moving forward, at most this many per format: a crafted file (a megabyte of
# 0xFF fill bytes, or of empty PNG chunks) then costs at most ~35 ms (JPEG) or ~0.5 s
# (PNG), no more than decoding a small PNG that inflates to the pixel limit. Real JPEGs
# need a few dozen steps before their scan; a PNG one per IDAT chunk before an eXIf that
# follows them (16,384: 128 MB of image data in libpng's 8 KB chunks); an animated WebP
# one per frame.
_MAX_STEPS = {"JPEG": 1024, "PNG": 16384, "WebP": 4096}


def starts_with(data: tf.Tensor, prefix: bytes, offset: int = 0) -> tf.Tensor:
    """Whether ``data`` holds ``prefix`` at byte ``offset``."""
    return tf.strings.substr(data, offset, len(prefix)) == prefix


def find(data: tf.Tensor, pattern: bytes, start: int = 0) -> tf.Tensor:
    """The first position of ``pattern`` in ``data`` at or after ``start``, -1 if none.

    One string split in C++ rather than byte arithmetic in the graph: a handful of ops
    whatever the file's size (per-op overhead, not bytes, is what costs here; the raw op
    saves ``tf.strings.split``'s RaggedTensor ops).
    """
    if start:
        start = tf.minimum(tf.cast(start, tf.int32), tf.strings.length(data))  # pos <= len
        data = tf.strings.substr(data, start, _ALL)
    _, pieces, shape = tf.raw_ops.StringSplitV2(
        input=tf.reshape(data, [1]), sep=pattern, maxsplit=1
    )
    found = tf.cast(start + tf.strings.length(pieces[0]), tf.int64)
    return tf.where(shape[1] > 1, found, tf.constant(-1, tf.int64))


def integers(data: tf.Tensor, offset: int, dtype, count: int, little_endian: bool) -> tf.Tensor:
    """``count`` integers of ``dtype`` at byte ``offset`` of ``data`` (the zero-padded header,
    or the file where the bytes are known to be there)."""
    size = count * dtype.size
    return tf.cast(
        tf.io.decode_raw(tf.strings.substr(data, offset, size), dtype, little_endian=little_endian),
        tf.int64,
    )


def _bytes_at(block: tf.Tensor, offset, width: int) -> tf.Tensor:
    """The ``width`` bytes at ``offset`` of the string ``block`` as int64 [width], zeros
    past its end (substr fails on a position past the end)."""
    size = tf.cast(tf.strings.length(block), tf.int64)
    piece = tf.strings.substr(block, tf.minimum(tf.cast(offset, tf.int64), size), width)
    padded = tf.strings.substr(tf.strings.join([piece, b"\x00" * width]), 0, width)
    return tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)


def _entry_weights(little_endian: bool) -> list[list[int]]:
    """[12, 4]: an IFD entry's bytes times these, summed, give (tag, type, count, value);
    the value is the field's first two bytes, where a single SHORT lies."""
    fields = ((0, 2), (2, 2), (4, 4), (8, 2))  # (offset, width) in the entry
    weights = [[0] * len(fields) for _ in range(12)]
    for column, (offset, width) in enumerate(fields):
        for byte in range(width):
            weights[offset + byte][column] = 256 ** (byte if little_endian else width - 1 - byte)
    return weights


_ENTRY_WEIGHTS = {order: _entry_weights(order) for order in (True, False)}


def _tiff_orientation(tiff: tf.Tensor) -> tf.Tensor:
    """The Orientation (1-8) in IFD0 of an EXIF block (TIFF header first); 1 when it has
    none or the block is malformed (unknown byte order, an offset or IFD past its end, an
    entry of another type or count, a value outside 1-8).

    Only IFD0 describes the picture: a thumbnail's IFD1, the EXIF sub-IFD and MakerNotes
    later in the block may hold entries of the same tag, and are never read.
    """
    # PNG and WebP writers differ on whether the chunk repeats JPEG's "Exif\0\0" before the
    # TIFF header; readers (exiftool, Pillow) skip it, and so does this.
    tiff = tf.strings.substr(tiff, tf.where(starts_with(tiff, _EXIF_ID), 6, 0), _ALL)
    size = tf.cast(tf.strings.length(tiff), tf.int64)
    order = tf.strings.substr(tiff, 0, 4)
    little = tf.equal(order, _TIFF_LITTLE)
    known = little | tf.equal(order, _TIFF_BIG)

    def unsigned(offset, width: int) -> tf.Tensor:
        weights = tf.where(
            little,
            tf.constant([256**i for i in range(width)], tf.int64),
            tf.constant([256**i for i in reversed(range(width))], tf.int64),
        )
        return tf.reduce_sum(_bytes_at(tiff, offset, width) * weights)

    ifd0 = unsigned(4, 4)
    count = unsigned(ifd0, 2)
    entries = ifd0 + 2
    fits = known & (entries + 12 * count <= size)
    table = tf.strings.substr(tiff, tf.minimum(entries, size), tf.where(fits, 12 * count, 0))
    # One zero row appended (tag 0): the gather below always has a row to take.
    rows = tf.reshape(
        tf.cast(tf.io.decode_raw(tf.strings.join([table, b"\x00" * 12]), tf.uint8), tf.int64),
        [-1, 12],
    )
    weights = tf.where(
        little,
        tf.constant(_ENTRY_WEIGHTS[True], tf.int64),
        tf.constant(_ENTRY_WEIGHTS[False], tf.int64),
    )
    fields = tf.reduce_sum(rows[:, :, None] * weights[None], axis=1)  # [entries + 1, 4]
    match = tf.equal(fields[:, 0], _ORIENTATION_TAG)
    # The first entry of the tag (a valid IFD has each tag once, in ascending order).
    _, kind, values, value = tf.unstack(
        tf.gather(fields, tf.argmax(tf.cast(match, tf.int32))), num=4
    )
    valid = (
        fits
        & tf.reduce_any(match)
        & tf.equal(kind, _SHORT)
        & tf.equal(values, 1)
        & (value >= 1)
        & (value <= 8)
    )
    return tf.cast(tf.where(valid, value, 1), tf.int32)


def _walk(data: tf.Tensor, length: tf.Tensor, first: int, header: int, step, steps: int) -> tuple:
    """(start, size) of the payload of the segment ``step`` looks for; size 0 if none.

    The file's segments are read one after the other from byte ``first``, each segment's
    header (``header`` bytes, within the data) saying where the next one starts, until
    ``step`` finds the one, says to stop, the data ends or ``steps`` were taken.
    ``step(position)`` returns (next position, found, stop, payload start, payload size).
    """

    none, searching = tf.constant(0, tf.int64), tf.constant(-1, tf.int64)

    def body(position, start, size):
        following, found, stop, payload_start, payload_size = step(position)
        return (
            following,
            tf.where(found, payload_start, start),
            tf.where(found, tf.maximum(payload_size, 0), tf.where(stop, none, searching)),
        )

    _, start, size = tf.while_loop(
        lambda position, start, size: (size < 0) & (position + header <= length),
        body,
        (tf.constant(first, tf.int64), none, searching),
        maximum_iterations=steps,
    )
    return tf.minimum(start, length), tf.maximum(size, 0)


def _jpeg_exif(data: tf.Tensor, length: tf.Tensor) -> tuple:
    """The first APP1 segment holding EXIF, from SOI up to the scan (SOS) or EOI.

    Each segment is 0xFF, its marker byte and a 2-byte big-endian length that counts
    itself; 0xFF fill bytes may come before a marker. Anything else (a byte that starts no
    marker, a length below 2) ends the walk: no EXIF.
    """

    def step(position):
        marker, size = tf.unstack(integers(data, position, tf.uint16, 2, False), num=2)
        fill = tf.equal(marker, 0xFFFF)
        exif = (
            tf.equal(marker, 0xFFE1)
            & (size >= 2 + len(_EXIF_ID))
            & tf.equal(tf.strings.substr(data, position + 4, len(_EXIF_ID)), _EXIF_ID)
        )
        # After SOS comes the entropy-coded scan: APP segments stand before it.
        stop = ~fill & (
            (marker < 0xFF00) | tf.equal(marker, 0xFFDA) | tf.equal(marker, 0xFFD9) | (size < 2)
        )
        start = position + 4 + len(_EXIF_ID)
        return tf.where(fill, position + 1, position + 2 + size), exif, stop, start, size - 8

    return _walk(data, length, 2, 4, step, _MAX_STEPS["JPEG"])


def _png_exif(data: tf.Tensor, length: tf.Tensor) -> tuple:
    """The eXIf chunk, anywhere before IEND (its spec allows it after IDAT too).

    Each chunk is a 4-byte big-endian data length, a 4-byte type, the data and a CRC.
    """

    def step(position):
        size = integers(data, position, tf.int32, 1, little_endian=False)[0]
        kind = tf.strings.substr(data, position + 4, 4)
        stop = tf.equal(kind, b"IEND") | (size < 0)  # lengths are at most 2**31 - 1
        return position + 12 + size, tf.equal(kind, b"eXIf"), stop, position + 8, size

    return _walk(data, length, 8, 8, step, _MAX_STEPS["PNG"])


def _webp_exif(data: tf.Tensor, length: tf.Tensor) -> tuple:
    """The EXIF chunk of an extended (VP8X) WebP.

    After the 12-byte RIFF header each chunk is a 4-byte type, a 4-byte little-endian data
    length and the data, padded to an even length.
    """

    def step(position):
        kind = tf.strings.substr(data, position, 4)
        size = integers(data, position + 4, tf.int32, 1, little_endian=True)[0] % (1 << 32)
        following = position + 8 + size + size % 2
        return following, tf.equal(kind, b"EXIF"), tf.constant(False), position + 8, size

    return _walk(data, length, 12, 8, step, _MAX_STEPS["WebP"])


# Each format's walk to its EXIF, and the bytes its EXIF segment or chunk always holds.
_EXIF_WALKS = {
    "JPEG": (_jpeg_exif, _EXIF_ID),
    "PNG": (_png_exif, b"eXIf"),
    "WebP": (_webp_exif, b"EXIF"),
}
FORMATS_WITH_EXIF = tuple(_EXIF_WALKS)


@functools.cache
def _read_orientation(fmt: str):
    """``orientation``'s walk and IFD0 read for ``fmt``, as a function of (data,
    length) that the graph calls rather than inlines.

    An untaken ``tf.cond`` branch still costs each of its ops (lowered to Switch/Merge,
    they pass a dead tensor on): inlined, the walk and read of ~100 ops cost a photo
    without EXIF ~50-150 us (2 cores under load), more than the rest of its header checks.
    Behind a call the untaken branch is one op.
    """
    walk = _EXIF_WALKS[fmt][0]

    def read(data, length):
        start, size = walk(data, length)
        return _tiff_orientation(tf.strings.substr(data, start, size))

    return tf.function(
        read,
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)],
        autograph=False,
        # TensorFlow's function inliner skips a function carrying this attribute; the
        # SavedModel keeps it (tests/test_serving_parity.py runs the exported graph).
        experimental_attributes={"_noinline": True},
    )


def orientation(data: tf.Tensor, length: tf.Tensor, fmt: str) -> tf.Tensor:
    """The EXIF Orientation (1-8) of a ``fmt`` file (``FORMATS_WITH_EXIF``): from IFD0 of
    the EXIF in its own segment (a JPEG's first APP1 segment that holds EXIF, a PNG's eXIf
    chunk, a WebP's EXIF chunk); 1 without EXIF or with malformed EXIF.

    The segments are walked, not searched for the entry's bytes: the same 10 bytes in a
    comment, an ICC profile, XMP, a MakerNote or a thumbnail's IFD never rotate a photo.

    Args:
      data: Scalar string tensor, the file's bytes.
      length: Its length (int64 scalar).
      fmt: The format's name, as in ``records.photo_header.FORMATS``.

    Returns:
      int32 scalar tensor, 1-8.
    """
    # A loop step costs ~20-30 us (a segment's ops): a file without the segment's identifier
    # anywhere (most photos from the web, all of the Kaggle set) has no EXIF to walk to,
    # and one string search says so. Finding it proves nothing: the walk decides.
    return tf.cond(
        find(data, _EXIF_WALKS[fmt][1]) >= 0,
        lambda: _read_orientation(fmt)(data, length),
        lambda: tf.constant(1, tf.int32),
    )
