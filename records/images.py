"""One photo's bytes -> what a record stores, or why not: ``records.photo`` in Python terms.

The rules live in ``records.photo.prepare`` (TensorFlow ops, so that the exported
SavedModel runs the very same function in its graph). This module runs it for Python
callers and turns its numeric fields into words:

* ``prepare(data)`` -> ``PreparedImage`` (the bytes to store, their size, what was
  converted), or ``BadImage`` with the reason (the words a manifest's ``skipped`` and
  predict's ``bad_images.json`` show).
* ``prepare_many(items)``: the same over many photos in a tf.data pipeline, in order,
  decoding in parallel (``make_records``' writer). A photo whose bytes pass every check
  but fail the decoder is re-run alone to get the decoder's words.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from records import photo, photo_header
from records.photo import StoreSettings, resized_size
from records.photo_header import DRAFT_SCALES, MAX_PIXELS, draft_scale

__all__ = [
    "DRAFT_SCALES",
    "MAX_PIXELS",
    "BadImage",
    "PreparedImage",
    "StoreSettings",
    "draft_scale",
    "prepare",
    "prepare_many",
    "resized_size",
]


class BadImage(ValueError):
    """The bytes cannot become a stored image; ``str(e)`` is the reason to report."""


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """What the writer stores for one input.

    Attributes:
      encoded: RGB JPEG bytes.
      height: Height of the stored image in pixels.
      width: Width of the stored image in pixels.
      conversion: None unless the format, colour space, orientation or decoded size was
        changed, else what was done (e.g. ``"PNG -> JPEG"``, ``"JPEG CMYK -> RGB"``,
        ``"EXIF orientation 6 -> rotated 90° clockwise (stored upright)"``), joined by "; ".
      resized: Whether the image was scaled down for ``max_short_side``.
    """

    encoded: bytes
    height: int
    width: int
    conversion: str | None = None
    resized: bool = False


_JPEG_MODES = {1: "L", 4: "CMYK"}


def _conversion(fields: dict, settings: StoreSettings) -> str | None:
    fmt, scale = int(fields["format"]), int(fields["scale"])
    changes = []
    if scale > 1:
        width, height = int(fields["width"]), int(fields["height"])
        changes.append(
            f"JPEG {width}x{height} decoded at 1/{scale} scale "
            f"({-(-width // scale)}x{-(-height // scale)}, pixel limit {settings.max_pixels})"
        )
    if fmt != photo_header.JPEG:
        changes.append(f"{photo_header.FORMATS[fmt]} -> JPEG")
    elif int(fields["components"]) != 3:
        mode = _JPEG_MODES.get(int(fields["components"]), f"{int(fields['components'])}-channel")
        changes.append(f"JPEG {mode} -> RGB")
    orientation = int(fields["orientation"])
    if orientation in photo_header.ORIENTATION_FIXES:
        fix = photo_header.ORIENTATION_FIXES[orientation]
        changes.append(f"EXIF orientation {orientation} -> {fix} (stored upright)")
    return "; ".join(changes) or None


def reason(fields: dict, data: bytes, settings: StoreSettings) -> str:
    """Why a photo whose ``status`` is not OK cannot be stored, in words."""
    status = int(fields["status"])
    name = photo_header.FORMATS[int(fields["format"])] if int(fields["format"]) >= 0 else "image"
    if status == photo_header.EMPTY:
        return "empty file (0 bytes)"
    if status == photo_header.ARCHIVE:
        kind = photo_header.ARCHIVES[int(fields["archive"])]
        return (
            f"nested archive: a {kind} archive, not an image; unpack it and pass it as its "
            "own --input"
        )
    if status == photo_header.NOT_IMAGE:
        return f"not an image (no known image format; starts with {data[:8]!r})"
    if status == photo_header.TOO_LARGE:
        width, height = int(fields["width"]), int(fields["height"])
        text = (
            f"image too large: {width}x{height} = {width * height} pixels "
            f"(limit {settings.max_pixels})"
        )
        if int(fields["format"]) == photo_header.JPEG:
            text += f", even decoded at 1/{DRAFT_SCALES[-1]} scale"
        return text
    if status == photo_header.TRUNCATED:
        return f"truncated {name} (the data ends before its end marker)"
    return f"cannot store {name} (status {status})"


def result(fields: dict, data: bytes, settings: StoreSettings) -> PreparedImage:
    """``photo.prepare``'s fields (numpy) -> the image to store.

    Raises:
      BadImage: The status is not OK.
    """
    if int(fields["status"]) != photo_header.OK:
        raise BadImage(reason(fields, data, settings))
    return PreparedImage(
        encoded=bytes(fields["encoded"]),
        height=int(fields["stored_height"]),
        width=int(fields["stored_width"]),
        conversion=_conversion(fields, settings),
        resized=bool(fields["resized"]),
    )


def _decoder_words(error: tf.errors.OpError) -> str:
    # "{{function_node __inference_...}} jpeg::Uncompress failed. ... [[{{node ...}}]]"
    text = re.sub(r"\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]", "", error.message)
    return " ".join(text.split()).strip(" .") or type(error).__name__


def prepare(
    data: bytes,
    max_short_side: int | None = None,
    jpeg_quality: int = 90,
    max_pixels: int = MAX_PIXELS,
) -> PreparedImage:
    """Checks one photo and returns the bytes to store (``records.photo.prepare``).

    Args:
      data: The source file's bytes.
      max_short_side: If set, the stored copy's shorter side is at most this many
        pixels (re-encoded; never upscaled). None keeps the original size.
      jpeg_quality: JPEG quality (1-95) for any re-encoded image.
      max_pixels: Decode at most this many pixels: a JPEG over it is decoded reduced
        (recorded in ``conversion``), anything else refused (checked before decoding).

    Raises:
      BadImage: With the reason: empty, an archive, not an image, too large, truncated,
        or damaged data the decoder refuses.
    """
    settings = StoreSettings(max_short_side, jpeg_quality, max_pixels)
    try:
        fields = photo.prepare_function(settings)(tf.constant(data, tf.string))
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        fmt = int(
            photo_header.inspect(tf.constant(data, tf.string), max_pixels, max_short_side)["format"]
        )
        name = photo_header.FORMATS[fmt] if fmt >= 0 else "image"
        raise BadImage(f"corrupt {name} ({_decoder_words(e)})") from None
    return result({k: v.numpy() for k, v in fields.items()}, data, settings)


def prepare_many(
    items: Iterable, read: Callable[[object], bytes], settings: StoreSettings, parallel: int
) -> Iterator[tuple[str, object]]:
    """``prepare`` over many photos, in order: ``("ok", PreparedImage)`` or ``("skip", reason)``.

    One tf.data pipeline (``parallel`` photos decoded at once, in order) instead of a
    process pool: the graph ops release the GIL, and it is the same function the
    SavedModel runs.

    Args:
      items: What to prepare, in order.
      read: ``item -> bytes``; raising ``BadImage`` or ``OSError`` skips the item with
        that reason (e.g. unreadable, or changed since it was planned).
      settings: The records' settings.
      parallel: Photos prepared at once.
    """
    items = list(items)
    early: dict[int, str] = {}

    def generate():
        for index, item in enumerate(items):
            try:
                yield index, read(item)
            except BadImage as e:
                early[index] = str(e)
            except OSError as e:
                early[index] = f"unreadable: {e}"

    function = photo.prepare_function(settings)
    data = (
        tf.data.Dataset.from_generator(
            generate,
            output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)),
        )
        .map(
            lambda index, encoded: (index, function(encoded)),
            num_parallel_calls=parallel,
            deterministic=True,
        )
        # A photo the decoder refuses drops out here; its index is missing below.
        .ignore_errors()
        .prefetch(parallel)
    )
    iterator = iter(data.as_numpy_iterator())
    pending = next(iterator, None)
    for index, item in enumerate(items):
        if pending is not None and pending[0] == index:
            fields = pending[1]
            pending = next(iterator, None)
            try:
                yield "ok", result(fields, b"", settings)
            except BadImage:
                yield "skip", reason(fields, read(item), settings)
        elif index in early:
            yield "skip", early.pop(index)
        else:
            # Dropped by ignore_errors: the decoder refused it; ask again for the words.
            try:
                prepare(
                    read(item), settings.max_short_side, settings.jpeg_quality, settings.max_pixels
                )
                yield "skip", "cannot decode (refused in the batched conversion)"
            except BadImage as e:
                yield "skip", str(e)
            except OSError as e:
                yield "skip", f"unreadable: {e}"


def checked_reader(expected_sha256: Callable[[object], str], read: Callable[[object], bytes]):
    """``read`` that refuses bytes whose sha256 is not the one the plan was built on."""

    def read_checked(item) -> bytes:
        data = read(item)
        if hashlib.sha256(data).hexdigest() != expected_sha256(item):
            raise BadImage("file changed while the conversion ran (sha256 differs from pass 1)")
        return data

    return read_checked


def as_array(prepared: PreparedImage) -> np.ndarray:
    """The stored picture's pixels, decoded as the pipeline decodes records."""
    return tf.io.decode_jpeg(prepared.encoded, channels=3).numpy()
