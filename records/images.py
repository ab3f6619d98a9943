"""Validates one image's bytes and turns them into what a record stores: an RGB JPEG.

The rule: every stored image is a JPEG that ``tf.io.decode_jpeg(x, channels=3)``
decodes to the right RGB colours, and the recorded height/width are the stored image's.

* An RGB JPEG (baseline or progressive) is stored byte-for-byte as it came, unless
  ``max_short_side`` asks for a smaller copy.
* A grayscale or CMYK JPEG is converted to RGB and re-encoded.
* Another image format, e.g. a PNG or GIF saved under a ``.jpg`` name (common in scraped
  data), is *converted* rather than skipped: the picture is fine, only its container is
  wrong. A GIF contributes its first frame; transparency is composited onto white.
* Empty, truncated or corrupt files and non-images raise ``BadImage`` with the reason.

* A photo whose EXIF ``Orientation`` tag (values 2-8) says it is stored sideways or
  mirrored is turned upright and re-encoded (only those images), because
  ``tf.io.decode_jpeg`` ignores EXIF: the record must hold the picture as a viewer shows
  it, with the upright height/width. ``conversion`` says what was done.
* A JPEG whose header claims more than ``MAX_PIXELS`` pixels (a 12000x12000 panorama or
  scan) is decoded *reduced*, at 1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's
  ``Image.draft``): the mildest reduction that fits under ``MAX_PIXELS``, or, with
  ``max_short_side``, the strongest that still leaves that short side (the resize would
  throw the rest away). ``conversion`` records it. Any other image over ``MAX_PIXELS``
  (PNG, GIF, ... cannot be decoded reduced), or a JPEG still over it at 1/8, is skipped
  *before* it is decoded, so that a few-KB file claiming 9000x9000 cannot cost a worker
  240 MB.
* An archive (e.g. a ``.zip`` inside the input) is skipped as a nested archive.

Truncation: Pillow fully decodes every image (``Image.load``) with
``LOAD_TRUNCATED_IMAGES`` off, which raises on a JPEG whose data ends early, even when
only the end-of-image marker is missing. We rely on that rather than on TF, whose
decoder behaviour on short data has varied between versions.

``upright`` and ``decode_upright_rgb`` apply the same rules for code that decodes
images without storing them (prediction). This module imports no TensorFlow (it runs in
pool workers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Explicit, in case any other import flipped this global: truncated images must fail.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's own decompression-bomb guard is replaced here, not dropped. It runs inside
# Image.open on the header's full size, before a JPEG can be asked for a reduced decode:
# it warns over 89,478,485 pixels and refuses over twice that, so a 12000x12000 JPEG (which
# decodes at 1/2 scale well under MAX_PIXELS) was skipped with Pillow's text. Every decode
# here goes through _open_checked, which checks the size that will actually be decoded
# against MAX_PIXELS, from the header, before any pixel is decoded, with this project's
# message. (A process-wide setting; this module is what decodes untrusted images.)
Image.MAX_IMAGE_PIXELS = None


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))
_ARCHIVE_MAGIC = (
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
)

# The largest picture decoded, in pixels (width * height), checked from the header
# before any decoding. Real photos stay below it: 48/50 MP phone cameras (8000x6000,
# 8160x6120), 64 MP ones (9248x6936 = 64.1 MP) and 61 MP full-frame cameras
# (9504x6336 = 60.2 MP). Decoded as RGB that is at most ~195 MB per worker; anything
# larger (e.g. a 9000x9000 header on a few-KB file) is skipped with the reason.
MAX_PIXELS = 65_000_000

# The reductions libjpeg can decode to directly (1/1, 1/2, 1/4, 1/8 of each side).
DRAFT_SCALES: tuple[int, ...] = (1, 2, 4, 8)

# EXIF Orientation value -> what ``ImageOps.exif_transpose`` does to show it upright.
_ORIENTATION_FIXES = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored along the main diagonal",
    6: "rotated 90° clockwise",
    7: "mirrored along the anti-diagonal",
    8: "rotated 90° counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112


class BadImage(ValueError):
    """The bytes cannot become a stored image; ``str(e)`` is the reason to report."""


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """What the writer stores for one input.

    Attributes:
      encoded: RGB JPEG bytes.
      height: Height of the stored image in pixels.
      width: Width of the stored image in pixels.
      conversion: None unless the format, colour space or orientation was changed, else
        what was done (e.g. ``"PNG -> JPEG"``, ``"JPEG CMYK -> RGB"``,
        ``"EXIF orientation 6 -> rotated 90° clockwise (stored upright)"``), joined by "; ".
      resized: Whether the image was scaled down for ``max_short_side``.
    """

    encoded: bytes
    height: int
    width: int
    conversion: str | None = None
    resized: bool = False


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; anything with transparency is composited onto white first."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale PNG: scale to 8 bits before the RGB conversion (which clips).
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")


def resized_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side at most ``max_short_side``; never upscales."""
    short = min(width, height)
    if max_short_side is None or short <= max_short_side:
        return width, height
    scale = max_short_side / short
    if width <= height:
        return max_short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_short_side


def _reduced_size(width: int, height: int, scale: int) -> tuple[int, int]:
    # libjpeg rounds up: a side of n pixels decodes to ceil(n / scale).
    return -(-width // scale), -(-height // scale)


def draft_scale(
    width: int, height: int, max_pixels: int = MAX_PIXELS, max_short_side: int | None = None
) -> int | None:
    """How much to reduce a ``width`` x ``height`` JPEG while decoding it (a DCT scale).

    Returns:
      1 when it fits under ``max_pixels`` as it is; else the mildest scale in
      ``DRAFT_SCALES`` that fits (keeping the most detail), or with ``max_short_side`` the
      strongest one whose shorter side still reaches ``max_short_side`` (the resize to it
      would discard the rest, and the decode costs less); None when not even 1/8 fits.
    """
    if width * height <= max_pixels:
        return 1
    fitting = [
        scale
        for scale in DRAFT_SCALES
        if _reduced_size(width, height, scale)[0] * _reduced_size(width, height, scale)[1]
        <= max_pixels
    ]
    if not fitting:
        return None
    enough = [
        scale
        for scale in fitting
        if max_short_side and min(_reduced_size(width, height, scale)) >= max_short_side
    ]
    return max(enough) if enough else fitting[0]


def _open_checked(
    data: bytes, max_pixels: int, max_short_side: int | None = None
) -> tuple[Image.Image, str, str, str | None]:
    """Decodes ``data`` fully after checking its size.

    A JPEG over ``max_pixels`` is decoded reduced (``draft_scale``); ``max_short_side``
    only chooses how far.

    Returns:
      (image, source format, source mode, what the reduction did or None).

    Raises:
      BadImage: With the reason, if the bytes are empty, an archive, not an image, too
        large (and not a JPEG that can be decoded reduced), truncated or corrupt.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    archive = next((kind for magic, kind in _ARCHIVE_MAGIC if data.startswith(magic)), None)
    if archive is not None:
        raise BadImage(
            f"nested archive: a {archive} archive, not an image; unpack it and pass it "
            "as its own --input"
        )
    # Named from the magic bytes until Pillow knows better, so that a file cut short
    # inside its header is still reported as a truncated JPEG, not an "image".
    source_format = next((f for magic, f in _MAGIC if data.startswith(magic)), "image")
    try:
        with warnings.catch_warnings():
            # DecompressionBombWarning and friends: we decide, not a warning on stderr.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # open() reads only the header: the size is known before any pixel is decoded.
            image = Image.open(io.BytesIO(data))
            source_format, source_mode = image.format or "unknown", image.mode
            width, height = image.size
            reduction = None
            if width * height > max_pixels:
                reduction = _draft(image, max_pixels, max_short_side)
            # Full decode: the only reliable way to find truncated or corrupt data.
            image.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"not an image (no known image format; starts with {data[:8]!r})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        # Only if other code in this process set Image.MAX_IMAGE_PIXELS again (see the
        # top of this module): still this project's reason, not Pillow's text.
        raise BadImage(
            f"image too large: over Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}, which "
            f"other code in this process set (this project's limit is {max_pixels} decoded "
            "pixels)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if "truncated" in str(e).lower():
            raise BadImage(f"truncated {source_format} ({e})") from None
        raise BadImage(f"corrupt {source_format} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - one odd file must never end the whole run.
        raise BadImage(f"cannot decode {source_format} ({type(e).__name__}: {e})") from None
    return image, source_format, source_mode, reduction


def _draft(image: Image.Image, max_pixels: int, max_short_side: int | None) -> str:
    """Sets up a reduced decode of an opened (not yet decoded) image over ``max_pixels``.

    Returns:
      What was done, for ``PreparedImage.conversion``.

    Raises:
      BadImage: The image is not a JPEG, or is too large even at 1/8.
    """
    width, height = image.size
    too_large = f"image too large: {width}x{height} = {width * height} pixels (limit {max_pixels})"
    if image.format != "JPEG":
        raise BadImage(too_large)
    scale = draft_scale(width, height, max_pixels, max_short_side)
    if scale is None:
        raise BadImage(f"{too_large}, even decoded at 1/{DRAFT_SCALES[-1]} scale")
    # draft() picks the largest scale with size * scale <= the image's, so asking for the
    # floor of each side / scale gives exactly `scale` (sides of JPEGs this large are far
    # above scale**2, where the floor could allow more).
    image.draft(image.mode, (width // scale, height // scale))
    if image.size != _reduced_size(width, height, scale):
        # Pillow declined (e.g. a JPEG in several tiles): no reduced decode, so no decode.
        raise BadImage(f"{too_large}; this JPEG cannot be decoded reduced")
    return (
        f"JPEG {width}x{height} decoded at 1/{scale} scale "
        f"({image.size[0]}x{image.size[1]}, pixel limit {max_pixels})"
    )


def upright(image: Image.Image) -> tuple[Image.Image, str | None]:
    """The picture as a viewer shows it: EXIF orientation applied.

    Args:
      image: A decoded (or at least opened) Pillow image.

    Returns:
      ``(image, None)`` when there is nothing to do (no Orientation tag, 1, or an
      invalid value), else ``(upright copy, description)``, e.g.
      ``"EXIF orientation 6 -> rotated 90° clockwise (stored upright)"``.
    """
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - malformed EXIF: keep the pixels as stored.
        return image, None
    if orientation not in _ORIENTATION_FIXES:
        return image, None
    fix = _ORIENTATION_FIXES[orientation]
    return ImageOps.exif_transpose(
        image
    ), f"EXIF orientation {orientation} -> {fix} (stored upright)"


def decode_upright_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decodes image bytes as ``prepare`` sees them: size-checked, upright, RGB.

    Args:
      data: Image file bytes (any format Pillow reads).
      max_pixels: Decode at most this many pixels: a JPEG over it is decoded reduced,
        anything else refused (checked from the header, before decoding).

    Returns:
      A ``(height, width, 3)`` uint8 array of the upright picture (reduced, for a JPEG
      over ``max_pixels``).

    Raises:
      BadImage: With the reason, as for ``prepare``.
    """
    image, _, _, _ = _open_checked(data, max_pixels)
    image, _ = upright(image)
    return np.asarray(_to_rgb(image), dtype=np.uint8)


def prepare(
    data: bytes,
    max_short_side: int | None = None,
    jpeg_quality: int = 90,
    max_pixels: int = MAX_PIXELS,
) -> PreparedImage:
    """Checks one image and returns the bytes to store.

    Args:
      data: The source file's bytes.
      max_short_side: If set, the stored copy's shorter side is at most this many
        pixels (re-encoded; never upscaled). None keeps the original size.
      jpeg_quality: JPEG quality (1-95) for any re-encoded image.
      max_pixels: Decode at most this many pixels: a JPEG over it is decoded reduced
        (recorded in ``conversion``), anything else skipped (checked before decoding).

    Returns:
      The image to store.

    Raises:
      BadImage: With the reason, if the bytes are empty, an archive, not an image, too
        large, truncated or corrupt.
    """
    image, source_format, source_mode, reduction = _open_checked(data, max_pixels, max_short_side)
    image, orientation_fix = upright(image)
    width, height = image.size
    new_width, new_height = resized_size(width, height, max_short_side)
    # A reduced decode is recorded like a rotation: the stored pixels are not the file's.
    changes = [reduction] if reduction else []
    if source_format != "JPEG":
        changes.append(f"{source_format} -> JPEG")
    elif source_mode != "RGB":
        changes.append(f"JPEG {source_mode} -> RGB")
    if orientation_fix:
        changes.append(orientation_fix)
    conversion = "; ".join(changes) or None
    resized = (new_width, new_height) != (width, height)
    if conversion is None and not resized:
        return PreparedImage(encoded=data, height=height, width=width)

    rgb = _to_rgb(image)
    if resized:
        # Lanczos: the sharpest common filter for strong downscaling (500 -> 160 px).
        rgb = rgb.resize((new_width, new_height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # Baseline, 4:2:0, no EXIF/ICC carried over: the plainest JPEG every decoder reads.
    rgb.save(buffer, format="JPEG", quality=jpeg_quality)
    return PreparedImage(
        encoded=buffer.getvalue(),
        height=new_height,
        width=new_width,
        conversion=conversion,
        resized=resized,
    )


def prepare_source(task: tuple) -> tuple:
    """Pool worker: reads and prepares one source; never raises for a bad input.

    Args:
      task: ``(source, expected_sha256, max_short_side, jpeg_quality)`` where ``source``
        has ``read()`` and ``expected_sha256`` is the hash the plan was built on.

    Returns:
      ``("ok", PreparedImage)`` or ``("skip", reason)``.
    """
    source, expected_sha256, max_short_side, jpeg_quality = task
    try:
        data = source.read()
    except OSError as e:
        return "skip", f"unreadable: {e}"
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        # Written records must match the identity (and split) the plan gave them.
        return "skip", "file changed while the conversion ran (sha256 differs from pass 1)"
    try:
        return "ok", prepare(data, max_short_side, jpeg_quality)
    except BadImage as e:
        return "skip", str(e)
