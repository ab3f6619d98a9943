"""JPEG decoding for the input pipeline: the cheapest correct decode per example.

Decoding is the dominant cost of the pipeline (a 500x375 JPEG costs ~4 ms on one core,
the resize and flip together well under 1 ms). Two tricks keep it small:

* **DCT-domain downscale.** libjpeg can decode straight to 1/2, 1/4 or 1/8 size by
  skipping high-frequency coefficients (the ``ratio`` attribute of
  ``tf.io.decode_jpeg``), which is several times cheaper than a full decode followed by a
  resize. ``ratio`` must be a Python int (it is an op attribute), so the per-example
  choice goes through ``tf.switch_case`` over 1/2/4/8, picking the largest ratio that
  still leaves the decoded image (or crop) at least as large as the target size, so we
  only ever downscale the last step and never lose resolution the model could use.
* **Fused crop.** In training the random crop window is sampled *before* decoding and
  ``tf.image.decode_and_crop_jpeg`` decodes only that window (with the same ratio trick:
  with ``ratio`` > 1 the crop window is given in the downscaled image's coordinates).

Everything here is graph-safe (usable inside ``Dataset.map`` and ``tf.function``) and
returns ``uint8`` images: normalisation lives in the model, so a saved model takes raw RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# The scales libjpeg's DCT-domain downscale supports through tf.io.decode_jpeg.
RATIOS: tuple[int, ...] = (1, 2, 4, 8)

# Training crop distribution at strength 1.0: the crop keeps 35%..100% of the image area
# with an aspect ratio within 3:4..4:3 of the image's. Milder than Inception's 8%..100%:
# at 128x128 a cat's face crop loses the cue that separates it from a dog's.
_MIN_AREA_AT_FULL_STRENGTH = 0.35
_MAX_ASPECT_CHANGE_AT_FULL_STRENGTH = 4.0 / 3.0
# Photometric jitter at strength 1.0, as fractions of the [0, 255] range / contrast factor.
_BRIGHTNESS_DELTA_AT_FULL_STRENGTH = 0.08
_CONTRAST_DELTA_AT_FULL_STRENGTH = 0.15


def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(s) for s in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {tuple(image_size)}")
    return height, width


def choose_ratio(
    height, width, target_height: int, target_width: int, max_ratio: int = 8
) -> tf.Tensor:
    """Largest DCT downscale ratio in ``RATIOS`` that keeps ``height x width`` >= the target.

    Works on tensors (graph-safe) and plain ints. ``height``/``width`` are the size of the
    region to decode (the whole image, or a crop window) at full resolution. ``max_ratio``
    caps it (see ``max_useful_ratio``).

    Returns:
      An int32 scalar tensor, one of 1, 2, 4, 8.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    ratio = tf.ones_like(height)  # same shape as the sizes: scalar or per image
    # Floor division is conservative: libjpeg produces ceil(size / ratio) pixels, so the
    # decoded region is never smaller than size // ratio >= target.
    for candidate in (r for r in RATIOS[1:] if r <= max_ratio):
        fits = tf.logical_and(
            height // candidate >= target_height, width // candidate >= target_width
        )
        ratio = tf.where(fits, candidate, ratio)
    return ratio


def _ratio_index(ratio: tf.Tensor) -> tf.Tensor:
    # RATIOS are powers of two: index = log2(ratio).
    return tf.cast(
        tf.math.round(tf.math.log(tf.cast(ratio, tf.float32)) / tf.math.log(2.0)), tf.int32
    )


def _decode_with_ratio(encoded: tf.Tensor, ratio_index: tf.Tensor, max_ratio: int = 8) -> tf.Tensor:
    ratios = [r for r in RATIOS if r <= max_ratio]
    if len(ratios) == 1:
        # No branch at all: a switch_case costs ~0.1 ms per image inside tf.data.
        return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_FAST")
    branches = [
        (lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r, dct_method="INTEGER_FAST"))
        for r in ratios
    ]
    return tf.switch_case(tf.minimum(ratio_index, len(ratios) - 1), branches)


def _decode_crop_with_ratio(
    encoded: tf.Tensor, ratio_index: tf.Tensor, window: tf.Tensor, max_ratio: int = 8
) -> tf.Tensor:
    ratios = [r for r in RATIOS if r <= max_ratio]
    if len(ratios) == 1:
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3, dct_method="INTEGER_FAST")
    branches = [
        (
            lambda r=r: tf.image.decode_and_crop_jpeg(
                encoded, window, channels=3, ratio=r, dct_method="INTEGER_FAST"
            )
        )
        for r in ratios
    ]
    return tf.switch_case(tf.minimum(ratio_index, len(ratios) - 1), branches)


def _resize_to_uint8(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    # After the DCT downscale the remaining factor is below 2x, so plain bilinear (no
    # antialias filter) does not alias visibly and is the cheapest resize.
    resized = tf.image.resize(image, (height, width), method="bilinear")
    # +0.5 then clip and a truncating cast: rounds to uint8.
    return tf.cast(tf.clip_by_value(resized + 0.5, 0.0, 255.0), tf.uint8)


def max_useful_ratio(max_short_side: int | None, image_size: int | Sequence[int]) -> int:
    """Largest DCT ratio any image can use for records whose shorter side is at most ``max_short_side``.

    Records written with ``--max_short_side`` S have a shorter side of at most S, so a
    ratio r is only ever chosen if S // r >= the smaller target side. Knowing that lets
    the decode skip the ratio branch (1 for S=160 at 128x128).
    """
    if not max_short_side:
        return RATIOS[-1]
    smallest_target = min(_size_pair(image_size))
    return max(r for r in RATIOS if r == 1 or max_short_side // r >= smallest_target)


def jpeg_shape(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) of a JPEG from its header only (no decode), as int32 tensors."""
    shape = tf.io.extract_jpeg_shape(encoded, output_type=tf.int32)
    return shape[0], shape[1]


def decode_and_resize(
    encoded: tf.Tensor,
    image_size: int | Sequence[int] = (128, 128),
    height: tf.Tensor | None = None,
    width: tf.Tensor | None = None,
    max_ratio: int = 8,
) -> tf.Tensor:
    """The deterministic (eval / predict) decode of one JPEG: whole image -> ``image_size``.

    The whole image is resized to ``image_size`` (aspect ratio not kept, like the
    ``target_size`` of the Keras generators it replaces), using the largest DCT downscale
    that keeps it at least ``image_size``.

    Args:
      encoded: Scalar string tensor holding JPEG bytes.
      image_size: Output (height, width), or one int for a square.
      height: Stored image height if known (saves reading the JPEG header).
      width: Stored image width, as ``height``.
      max_ratio: Largest DCT ratio to consider; 1 skips the ratio branch (for records
        known to be small, see ``max_useful_ratio``).

    Returns:
      uint8 tensor of shape [height, width, 3].
    """
    target_height, target_width = _size_pair(image_size)
    if max_ratio > 1:
        if height is None or width is None:
            height, width = jpeg_shape(encoded)
        ratio = choose_ratio(height, width, target_height, target_width, max_ratio)
        image = _decode_with_ratio(encoded, _ratio_index(ratio), max_ratio)
    else:
        image = _decode_with_ratio(encoded, tf.constant(0), 1)
    return _resize_to_uint8(image, target_height, target_width)


def decode_image_any(encoded: tf.Tensor, image_size: int | Sequence[int] = (128, 128)) -> tf.Tensor:
    """Like ``decode_and_resize`` but accepts JPEG, PNG, GIF (first frame) or BMP bytes.

    For ``predict`` on user files. JPEGs take the fast ``decode_and_resize`` path; other
    formats are decoded at full size with ``tf.io.decode_image`` and resized.

    Returns:
      uint8 tensor of shape [height, width, 3].
    """
    target_height, target_width = _size_pair(image_size)

    def other_format():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return _resize_to_uint8(image, target_height, target_width)

    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: decode_and_resize(encoded, (target_height, target_width)),
        other_format,
    )


# Uniform random numbers each image's augmentation consumes (see ``sample_augmentation``).
NUM_UNIFORMS = 7


def sample_augmentation(
    heights: tf.Tensor,
    widths: tf.Tensor,
    uniforms: tf.Tensor,
    image_size: int | Sequence[int],
    strength: float = 1.0,
    max_ratio: int = 8,
) -> dict[str, tf.Tensor]:
    """Augmentation parameters for a group of images, vectorised over the group.

    Crop: Inception-style, a random fraction of the area (35%..100% at strength 1) with a
    random aspect change (3:4..4:3) at a random position; flip with probability 1/2;
    brightness +-8% and contrast +-15% (around mid-grey) at strength 1. Working on a
    group at once matters: inside tf.data each scalar op costs ~5-10 us per call, and
    per image there would be dozens, as much as decoding a small JPEG.

    Args:
      heights: int [N] full-resolution image heights.
      widths: int [N] full-resolution image widths.
      uniforms: float [N, NUM_UNIFORMS] uniform [0, 1) random numbers.
      image_size: The size the crops are resized to (it chooses the DCT ratio).
      strength: >= 0; 0 gives the whole image, flipped or not, no jitter.
      max_ratio: Largest DCT ratio to use.

    Returns:
      Dict of per-image tensors: ``window`` int32 [N, 4] as [top, left, height, width] in
      the coordinates of the image downscaled by its ratio; ``ratio_index`` int32 [N]
      into ``RATIOS``; ``flip`` bool [N]; ``scale`` and ``offset`` float32 [N] for the
      pixel jitter ``x * scale + offset``.
    """
    target_height, target_width = _size_pair(image_size)
    heights = tf.cast(heights, tf.float32)
    widths = tf.cast(widths, tf.float32)
    min_area = 1.0 - (1.0 - _MIN_AREA_AT_FULL_STRENGTH) * strength
    log_aspect = tf.math.log(1.0 + (_MAX_ASPECT_CHANGE_AT_FULL_STRENGTH - 1.0) * strength)
    area = (min_area + (1.0 - min_area) * uniforms[:, 0]) * heights * widths
    aspect = tf.exp(log_aspect * (2.0 * uniforms[:, 1] - 1.0)) * widths / heights
    crop_heights = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, heights)
    crop_widths = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, widths)
    tops = tf.floor(uniforms[:, 2] * (heights - crop_heights + 1.0))
    lefts = tf.floor(uniforms[:, 3] * (widths - crop_widths + 1.0))

    ratio = choose_ratio(crop_heights, crop_widths, target_height, target_width, max_ratio)
    ratio_float = tf.cast(ratio, tf.float32)
    # With ratio r, decode_and_crop_jpeg takes the window in the downscaled image's
    # coordinates, whose size is ceil(size / r); clamp so rounding never leaves it.
    scaled_heights = tf.math.ceil(heights / ratio_float)
    scaled_widths = tf.math.ceil(widths / ratio_float)
    # The window's edges map outwards (floor the start, ceil the end), so a whole-image
    # window stays the whole downscaled image.
    bottoms = tf.minimum(tf.math.ceil((tops + crop_heights) / ratio_float), scaled_heights)
    rights = tf.minimum(tf.math.ceil((lefts + crop_widths) / ratio_float), scaled_widths)
    tops = tf.minimum(tf.floor(tops / ratio_float), scaled_heights - 1.0)
    lefts = tf.minimum(tf.floor(lefts / ratio_float), scaled_widths - 1.0)
    crop_heights = tf.maximum(bottoms - tops, 1.0)
    crop_widths = tf.maximum(rights - lefts, 1.0)

    brightness = _BRIGHTNESS_DELTA_AT_FULL_STRENGTH * strength * 255.0
    contrast = _CONTRAST_DELTA_AT_FULL_STRENGTH * strength
    scale = 1.0 + contrast * (2.0 * uniforms[:, 5] - 1.0)
    # Contrast around mid-grey (not the image mean: that would cost a pass over pixels),
    # brightness as a shift; +0.5 makes the final truncating cast round.
    offset = 127.5 * (1.0 - scale) + brightness * (2.0 * uniforms[:, 6] - 1.0) + 0.5
    return {
        "window": tf.cast(tf.stack([tops, lefts, crop_heights, crop_widths], axis=1), tf.int32),
        "ratio_index": _ratio_index(ratio),
        "flip": uniforms[:, 4] < 0.5,
        "scale": scale,
        "offset": offset,
    }


def decode_crop_resized(
    encoded: tf.Tensor,
    params: dict[str, tf.Tensor],
    image_size: int | Sequence[int],
    max_ratio: int = 8,
) -> tf.Tensor:
    """The per-image half of the fused training decode: crop window -> resized float32.

    Only the crop window of one image is decoded, at its DCT ratio (one row of
    ``sample_augmentation``'s parameters), then resized (``decode_augmented`` adds the
    pixel jitter, rounding and flip).

    Returns:
      float32 [height, width, 3] in [0, 255].
    """
    target_height, target_width = _size_pair(image_size)
    crop = _decode_crop_with_ratio(encoded, params["ratio_index"], params["window"], max_ratio)
    # Plain bilinear resize: measured cheaper here than crop_and_resize with a mirrored
    # box (0.59 vs 0.84 ms per image), so the flip is done separately, on uint8 pixels.
    return tf.image.resize(crop, (target_height, target_width), method="bilinear")


def jitter_to_uint8(
    images: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor, jitter: bool = True
) -> tf.Tensor:
    """Pixel jitter ``x * scale + offset``, rounded and saturated to uint8.

    ``images`` is one float image [H, W, 3] with scalar ``scale``/``offset``, or a batch
    [B, H, W, 3] with [B] ones. ``offset`` includes the +0.5 that makes the cast round;
    with ``jitter`` False only that rounding is applied.
    """
    if not jitter:
        return tf.saturate_cast(images + 0.5, tf.uint8)
    if images.shape.rank == 4:
        scale = scale[:, None, None, None]
        offset = offset[:, None, None, None]
    return tf.saturate_cast(images * scale + offset, tf.uint8)


def decode_augmented(
    encoded: tf.Tensor,
    params: dict[str, tf.Tensor],
    image_size: int | Sequence[int],
    jitter: bool = True,
    max_ratio: int = 8,
) -> tf.Tensor:
    """Decodes one image with its ``sample_augmentation`` parameters (one row of them).

    Only the crop window is decoded, at its DCT ratio, then resized; one multiply-add
    applies the jitter, a saturating cast rounds to uint8 and the flip is done last on
    uint8 pixels.

    Returns:
      uint8 [height, width, 3].
    """
    image = decode_crop_resized(encoded, params, image_size, max_ratio)
    image = jitter_to_uint8(image, params["scale"], params["offset"], jitter)
    # tf.cond, not tf.where: a select broadcasting a scalar condition over the image
    # measured ~0.4 ms per image, more than the decode of a small JPEG; a batch-level
    # flip (dynamic_partition/stitch) measured no faster than this.
    return tf.cond(params["flip"], lambda: tf.reverse(image, axis=[1]), lambda: image)


def decode_crop_flip(
    encoded: tf.Tensor,
    image_size: int | Sequence[int],
    seed: tf.Tensor,
    strength: float = 1.0,
    height: tf.Tensor | None = None,
    width: tf.Tensor | None = None,
) -> tf.Tensor:
    """The fused training decode of one image: random crop window, DCT downscale, resize,
    flip, brightness/contrast jitter.

    The same two steps the training pipeline runs (there ``sample_augmentation`` is
    vectorised over groups of images), on one image: for eager use and tests.

    Args:
      encoded: Scalar string tensor holding JPEG bytes.
      image_size: Output (height, width), or one int for a square.
      seed: int tensor of shape [2]; the same seed gives the same augmentation.
      strength: Augmentation strength, >= 0; 0 keeps the whole image and only flips.
      height: Stored image height if known (the record's ``image/height``); read from
        the JPEG header when None.
      width: Stored image width, as ``height``.

    Returns:
      uint8 tensor of shape [height, width, 3].
    """
    if strength < 0:
        raise ValueError(f"augment strength must be >= 0, got {strength}")
    if height is None or width is None:
        height, width = jpeg_shape(encoded)
    uniforms = tf.random.stateless_uniform([1, NUM_UNIFORMS], tf.cast(seed, tf.int64))
    params = sample_augmentation(
        tf.reshape(height, [1]), tf.reshape(width, [1]), uniforms, image_size, strength
    )
    return decode_augmented(
        encoded, {k: v[0] for k, v in params.items()}, image_size, jitter=strength > 0
    )
