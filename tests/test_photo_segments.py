"""Tests for records.photo_segments: the EXIF orientation read from its own segment.

Every file is crafted here: TensorFlow encodes the pixels, and the EXIF segments, PNG and
WebP chunks are spliced in with bytes operations. Each photo goes through
``records.photo.prepare`` (what a record stores) eagerly and inside
``tf.data.Dataset.map``, and the stored pixels are checked, not only the orientation.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf

from records import photo, photo_header

# 40 wide x 20 tall, red top-left quadrant, blue elsewhere: where the red quadrant lands
# says how the picture was turned (the EXIF 2.3 definitions: 3 turns it 180°, 6 is the
# usual phone photo, its stored left side on top, 8 the other way).
_PICTURE = np.zeros((20, 40, 3), np.uint8)
_PICTURE[...] = (0, 0, 255)
_PICTURE[:10, :20] = (255, 0, 0)
_RED_CORNER = {1: ("top-left", (20, 40)), 3: ("bottom-right", (20, 40))}
_RED_CORNER.update({6: ("top-right", (40, 20)), 8: ("bottom-left", (40, 20))})

_SHORT, _LONG, _UNDEFINED = 3, 4, 7
_ORIENTATION, _EXIF_IFD, _MAKER_NOTE = 0x0112, 0x8769, 0x927C


# --- EXIF blocks ----------------------------------------------------------------------


def _entry(order: str, tag: int, kind: int, count: int, value: int) -> bytes:
    """One 12-byte IFD entry; a SHORT value sits in the first 2 bytes of its field."""
    endian = "<" if order == "II" else ">"
    field = (
        struct.pack(endian + "HH", value, 0) if kind == _SHORT else struct.pack(endian + "I", value)
    )
    return struct.pack(endian + "HHI", tag, kind, count) + field


def _ifd(order: str, entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    endian = "<" if order == "II" else ">"
    body = b"".join(_entry(order, *entry) for entry in entries)
    return struct.pack(endian + "H", len(entries)) + body + struct.pack(endian + "I", next_ifd)


def _tiff(order: str, ifd0: bytes, gap: bytes = b"", tail: bytes = b"") -> bytes:
    """A TIFF header, ``gap``, IFD0 (at 8 + len(gap), as the header says), ``tail``."""
    magic = b"II*\x00" if order == "II" else b"MM\x00*"
    return magic + struct.pack("<I" if order == "II" else ">I", 8 + len(gap)) + gap + ifd0 + tail


def _exif(order: str, orientation: int) -> bytes:
    """The EXIF of a camera photo: IFD0 with its Orientation, nothing else to mislead."""
    return _tiff(
        order, _ifd(order, [(0x0100, _LONG, 1, 40), (_ORIENTATION, _SHORT, 1, orientation)])
    )


# The 12 bytes of a little-endian Orientation=6 entry, as a comment, a profile or a blob
# may hold them by chance (the old byte search took the first it found).
_LOOK_ALIKE = _entry("II", _ORIENTATION, _SHORT, 1, 6)


def _with_maker_note(ifd0_orientation: int | None) -> bytes:
    """Little-endian EXIF whose IFD0 holds ``ifd0_orientation`` (or no entry) while a
    MakerNote (an IFD of its own, in the EXIF sub-IFD) and the thumbnail's IFD1 each hold
    an Orientation=6 entry."""
    ifd0_entries = 1 + (ifd0_orientation is not None)
    sub_ifd_at = 8 + 2 + 12 * ifd0_entries + 4
    maker_note = b"Maker\x00" + _ifd("II", [(_ORIENTATION, _SHORT, 1, 6)])
    maker_note_at = sub_ifd_at + 2 + 12 + 4
    ifd1_at = maker_note_at + len(maker_note)
    entries = [(_ORIENTATION, _SHORT, 1, ifd0_orientation)] if ifd0_orientation else []
    ifd0 = _ifd("II", [*entries, (_EXIF_IFD, _LONG, 1, sub_ifd_at)], next_ifd=ifd1_at)
    sub_ifd = _ifd("II", [(_MAKER_NOTE, _UNDEFINED, len(maker_note), maker_note_at)])
    ifd1 = _ifd("II", [(_ORIENTATION, _SHORT, 1, 6), (0x0201, _LONG, 1, 0)])
    return _tiff("II", ifd0, tail=sub_ifd + maker_note + ifd1)


# --- files ----------------------------------------------------------------------------


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _app1(tiff: bytes) -> bytes:
    return _segment(0xE1, b"Exif\x00\x00" + tiff)


def _jpeg(*segments: bytes, after_tables: bytes = b"") -> bytes:
    """The picture as a JFIF JPEG with ``segments`` after its APP0, ``after_tables`` after
    its two quantization tables (before the frame header)."""
    encoded = tf.io.encode_jpeg(_PICTURE, quality=95).numpy()
    app0_end = 2 + 2 + 16
    tables_end = app0_end + 2 * (2 + 67)
    assert encoded[2:4] == b"\xff\xe0" and encoded[app0_end : app0_end + 2] == b"\xff\xdb"
    assert encoded[tables_end : tables_end + 2] == b"\xff\xc0"
    return (
        encoded[:app0_end]
        + b"".join(segments)
        + encoded[app0_end:tables_end]
        + after_tables
        + encoded[tables_end:]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(before_idat: bytes = b"", after_idat: bytes = b"") -> bytes:
    encoded = tf.io.encode_png(_PICTURE).numpy()
    header_end = 8 + 12 + 13  # signature, IHDR
    assert encoded[12:16] == b"IHDR" and encoded[-8:-4] == b"IEND"
    return encoded[:header_end] + before_idat + encoded[header_end:-12] + after_idat + encoded[-12:]


def _vp8l(pixels: np.ndarray) -> bytes:
    """A lossless WebP bitstream of ``pixels`` whose channels take at most two values each:
    no transforms, and one simple prefix code (1 or 2 symbols) per channel."""
    bits: list[int] = []

    def put(value: int, count: int) -> None:
        bits.extend((value >> i) & 1 for i in range(count))  # least significant bit first

    height, width, _ = pixels.shape
    put(0x2F, 8)
    put(width - 1, 14)
    put(height - 1, 14)
    put(0, 1 + 3 + 1 + 1 + 1)  # no alpha, version 0, no transform, colour cache, meta codes
    values = [sorted(set(pixels[..., channel].ravel().tolist())) for channel in range(3)]
    for symbols in (values[1], values[0], values[2], [255], [0]):  # G, R, B, A, distance
        put(1, 1)
        put(len(symbols) - 1, 1)
        put(int(symbols[0] > 1), 1)
        put(symbols[0], 8 if symbols[0] > 1 else 1)
        if len(symbols) == 2:
            put(symbols[1], 8)
    for red, green, blue in pixels.reshape(-1, 3).tolist():
        for channel, value in ((1, green), (0, red), (2, blue)):
            if len(values[channel]) == 2:
                put(values[channel].index(value), 1)  # the canonical code: 0 for the smaller
    bits.extend([0] * (-len(bits) % 8))
    return bytes(
        sum(bit << i for i, bit in enumerate(bits[k : k + 8])) for k in range(0, len(bits), 8)
    )


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)


def _webp(*chunks: bytes) -> bytes:
    """The picture as an extended (VP8X) lossless WebP with ``chunks`` after the image."""
    flags = (0x08 if any(c.startswith(b"EXIF") for c in chunks) else 0) | (
        0x04 if any(c.startswith(b"XMP ") for c in chunks) else 0
    )
    height, width, _ = _PICTURE.shape
    canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
    body = (
        _riff_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas)
        + _riff_chunk(b"VP8L", _vp8l(_PICTURE))
        + b"".join(chunks)
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


# --- the cases: name -> (file, the orientation it is stored as) ----------------------

_ENTRY_6 = (_ORIENTATION, _SHORT, 1, 6)
_ICC = [_segment(0xE2, b"ICC_PROFILE\x00" + bytes([i, 2]) + b"\x00" * 60000) for i in (1, 2)]
_XMP = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>"

_COMMENT = _segment(0xFE, b"a comment " + _LOOK_ALIKE + _entry("MM", *_ENTRY_6))
# Adobe's APP14 (transform 1: YCbCr, what TensorFlow encodes), as Photoshop writes it.
_ADOBE = _segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")
COMMENT = {
    "comment": (_jpeg(_COMMENT), 1),
    "comment-after-app14": (_jpeg(_ADOBE, _COMMENT), 1),
}
MAKER_NOTE = {
    "ifd0-says-1": (_jpeg(_app1(_with_maker_note(ifd0_orientation=1))), 1),
    "ifd0-says-nothing": (_jpeg(_app1(_with_maker_note(ifd0_orientation=None))), 1),
    # The blob before IFD0 (IFD0's offset points past it): first in the bytes.
    "blob-before-ifd0": (
        _jpeg(_app1(_tiff("II", _ifd("II", [(_ORIENTATION, _SHORT, 1, 1)]), gap=_LOOK_ALIKE))),
        1,
    ),
}
BIG_ENDIAN = {
    f"big-endian-{orientation}": (
        _jpeg(
            _app1(
                _tiff(
                    "MM",
                    _ifd("MM", [(0x0100, _LONG, 1, 40), (_ORIENTATION, _SHORT, 1, orientation)]),
                    tail=b"Maker\x00" + _LOOK_ALIKE,
                )
            )
        ),
        orientation,
    )
    for orientation in (1, 3)
}
WHERE = {
    "first": (_jpeg(_app1(_exif("II", 6))), 6),
    # Beyond the first 64 KB, all the old byte search read.
    "after-120kb-of-app2": (_jpeg(*_ICC, _app1(_exif("II", 6))), 6),
    # An APP1 segment without EXIF is passed over.
    "after-an-xmp-app1": (_jpeg(_segment(0xE1, _XMP + _LOOK_ALIKE), _app1(_exif("II", 6))), 6),
    "after-fill-bytes": (_jpeg(b"\xff\xff\xff" + _app1(_exif("II", 6))), 6),
    # After the quantization tables, where no APP segment usually is.
    "after-tables": (_jpeg(after_tables=_app1(_exif("II", 6))), 6),
}
FIRST_ONLY = {
    "second-exif-app1": (_jpeg(_app1(_exif("II", 1)), _app1(_exif("II", 6))), 1),
    # Metadata stands before the scan (SOS): bytes after it are image data, or junk.
    "after-the-scan": (_jpeg()[:-2] + _app1(_exif("II", 6)) + b"\xff\xd9", 1),
}
MALFORMED = {
    name: (_jpeg(_app1(tiff)), 1)
    for name, tiff in {
        "cut-short": b"II*\x00",
        "byte-order": b"IX*\x00" + _tiff("II", _ifd("II", [_ENTRY_6]))[4:],
        "ifd0-past-the-end": b"II*\x00" + struct.pack("<I", 4096) + _ifd("II", [_ENTRY_6]),
        # IFD0 claims 3 entries; the block ends after the first.
        "entries-cut-short": _tiff("II", struct.pack("<H", 3) + _entry("II", *_ENTRY_6)),
        "long": _tiff("II", _ifd("II", [(_ORIENTATION, _LONG, 1, 6)])),
        "two-values": _tiff("II", _ifd("II", [(_ORIENTATION, _SHORT, 2, 6)])),
        "value-9": _tiff("II", _ifd("II", [(_ORIENTATION, _SHORT, 1, 9)])),
        "empty": b"",
    }.items()
}
PNG = {
    "png-exif": (_png(before_idat=_png_chunk(b"eXIf", _exif("II", 6))), 6),
    # The eXIf chunk may come after IDAT.
    "png-exif-after-idat-big-endian": (_png(after_idat=_png_chunk(b"eXIf", _exif("MM", 8))), 8),
    "png-exif-with-exif-id": (
        _png(before_idat=_png_chunk(b"eXIf", b"Exif\x00\x00" + _exif("II", 3))),
        3,
    ),
    "png-text": (_png(before_idat=_png_chunk(b"tEXt", b"Comment\x00" + _LOOK_ALIKE)), 1),
    "png-text-naming-exif": (_png(after_idat=_png_chunk(b"tEXt", b"eXIf" + _LOOK_ALIKE)), 1),
}
WEBP = {
    "webp-exif": (_webp(_riff_chunk(b"EXIF", _exif("II", 6))), 6),
    "webp-exif-after-xmp-big-endian": (
        _webp(_riff_chunk(b"XMP ", _XMP), _riff_chunk(b"EXIF", _exif("MM", 8))),
        8,
    ),
    "webp-exif-with-exif-id": (
        _webp(_riff_chunk(b"EXIF", b"Exif\x00\x00" + _exif("II", 3))),
        3,
    ),
    "webp-xmp": (_webp(_riff_chunk(b"XMP ", _XMP + b"EXIF" + _LOOK_ALIKE)), 1),
}
_CASES = {
    **COMMENT,
    **MAKER_NOTE,
    **BIG_ENDIAN,
    **WHERE,
    **FIRST_ONLY,
    **MALFORMED,
    **PNG,
    **WEBP,
}
_SETTINGS = photo.StoreSettings()


@pytest.fixture(scope="module")
def mapped() -> dict[str, dict]:
    """Every case through ``photo.prepare`` inside Dataset.map, traced once."""
    names = list(_CASES)
    dataset = tf.data.Dataset.from_tensor_slices([_CASES[name][0] for name in names]).map(
        lambda one: photo.prepare(one, _SETTINGS)
    )
    return dict(zip(names, dataset.as_numpy_iterator(), strict=True))


def _check(name: str, mapped: dict[str, dict]) -> dict:
    """The case's file, prepared eagerly, agrees with Dataset.map and is stored turned as
    its orientation says; an upright RGB JPEG is stored byte for byte."""
    data, orientation = _CASES[name]
    fields = {k: v.numpy() for k, v in photo.prepare(tf.constant(data), _SETTINGS).items()}
    assert fields.keys() == mapped[name].keys()
    for key, value in fields.items():
        assert value == mapped[name][key], key
    assert fields["status"] == photo_header.OK
    assert fields["orientation"] == orientation
    corner, shape = _RED_CORNER[orientation]
    pixels = tf.io.decode_jpeg(fields["encoded"], channels=3).numpy().astype(int)
    assert pixels.shape[:2] == shape
    assert (fields["stored_height"], fields["stored_width"]) == shape
    height, width = shape
    rows = slice(0, height // 2) if corner.startswith("top") else slice(height // 2, height)
    columns = slice(0, width // 2) if corner.endswith("left") else slice(width // 2, width)
    quadrant = pixels[rows, columns][2:-2, 2:-2]  # away from the JPEG-blurred edges
    np.testing.assert_allclose(quadrant.reshape(-1, 3).mean(0), (255, 0, 0), atol=12)
    assert 0.2 < (pixels[..., 0] > 128).mean() < 0.3  # one quadrant red, the rest blue
    if orientation == 1 and fields["format"] == photo_header.JPEG:
        assert fields["encoded"] == data and not fields["reencoded"]
    return fields


# --- JPEG -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COMMENT))
def test_a_comment_holding_an_orientation_entry_does_not_turn_the_photo(name, mapped):
    _check(name, mapped)


@pytest.mark.parametrize("name", list(MAKER_NOTE))
def test_only_ifd0_orients_not_a_maker_note_or_the_thumbnail(name, mapped):
    _check(name, mapped)


@pytest.mark.parametrize("name", list(BIG_ENDIAN))
def test_big_endian_ifd0_wins_over_a_little_endian_look_alike(name, mapped):
    _check(name, mapped)


@pytest.mark.parametrize("name", list(WHERE))
def test_the_first_exif_app1_segment_is_found_wherever_it_stands(name, mapped):
    _check(name, mapped)
    if name == "after-120kb-of-app2":
        assert _CASES[name][0].index(b"Exif\x00\x00") > 120_000


@pytest.mark.parametrize("name", list(FIRST_ONLY))
def test_only_the_first_exif_app1_before_the_scan_is_read(name, mapped):
    _check(name, mapped)


def test_the_walk_stops_at_the_scan():
    # An EXIF segment right after the scan's header, where entropy-coded data starts: the
    # scan's bytes are never read as segments. (Not decodable: the header alone is read.)
    data = _jpeg()
    scan = data.index(b"\xff\xda")
    scan_data = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    data = data[:scan_data] + _app1(_exif("II", 6)) + data[scan_data:]

    def orientation(one):
        return photo_header.inspect(one, photo_header.MAX_PIXELS, None)["orientation"]

    mapped = tf.data.Dataset.from_tensors(data).map(orientation).as_numpy_iterator()
    assert int(orientation(tf.constant(data))) == next(mapped) == 1


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_exif_means_upright_never_an_error(name, mapped):
    _check(name, mapped)


# --- PNG and WebP ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PNG))
def test_png_orientation_comes_from_its_exif_chunk(name, mapped):
    assert _check(name, mapped)["format"] == photo_header.PNG


@pytest.mark.parametrize("name", list(WEBP))
def test_webp_orientation_comes_from_its_exif_chunk(name, mapped):
    assert _check(name, mapped)["format"] == photo_header.WEBP
