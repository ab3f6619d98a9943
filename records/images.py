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

Truncation: Pillow fully decodes every image (``Image.load``) with
``LOAD_TRUNCATED_IMAGES`` off, which raises on a JPEG whose data ends early, even when
only the end-of-image marker is missing. We rely on that rather than on TF, whose
decoder behaviour on short data has varied between versions.

This module imports no TensorFlow (it runs in pool workers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

# Explicit, in case any other import flipped this global: truncated images must fail.
ImageFile.LOAD_TRUNCATED_IMAGES = False


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


class BadImage(ValueError):
    """The bytes cannot become a stored image; ``str(e)`` is the reason to report."""


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """What the writer stores for one input.

    Attributes:
      encoded: RGB JPEG bytes.
      height: Height of the stored image in pixels.
      width: Width of the stored image in pixels.
      conversion: None unless the format or colour space was changed, else what was
        done (e.g. ``"PNG -> JPEG"``, ``"JPEG CMYK -> RGB"``).
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


def prepare(
    data: bytes, max_short_side: int | None = None, jpeg_quality: int = 90
) -> PreparedImage:
    """Checks one image and returns the bytes to store.

    Args:
      data: The source file's bytes.
      max_short_side: If set, the stored copy's shorter side is at most this many
        pixels (re-encoded; never upscaled). None keeps the original size.
      jpeg_quality: JPEG quality (1-95) for any re-encoded image.

    Returns:
      The image to store.

    Raises:
      BadImage: With the reason, if the bytes are empty, not an image, truncated or corrupt.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    # Named from the magic bytes until Pillow knows better, so that a file cut short
    # inside its header is still reported as a truncated JPEG, not an "image".
    source_format = next((f for magic, f in _MAGIC if data.startswith(magic)), "image")
    source_mode = None
    try:
        with warnings.catch_warnings():
            # DecompressionBombWarning and friends: we decide, not a warning on stderr.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            source_format, source_mode = image.format or "unknown", image.mode
            # Full decode: the only reliable way to find truncated or corrupt data.
            image.load()
    except UnidentifiedImageError:
        raise BadImage(f"not an image (no known image format; starts with {data[:8]!r})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise BadImage(f"image too large to decode safely: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if "truncated" in str(e).lower():
            raise BadImage(f"truncated {source_format} ({e})") from None
        raise BadImage(f"corrupt {source_format} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - one odd file must never end the whole run.
        raise BadImage(f"cannot decode {source_format} ({type(e).__name__}: {e})") from None

    width, height = image.size
    new_width, new_height = resized_size(width, height, max_short_side)
    conversion = None
    if source_format != "JPEG":
        conversion = f"{source_format} -> JPEG"
    elif source_mode != "RGB":
        conversion = f"JPEG {source_mode} -> RGB"
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
