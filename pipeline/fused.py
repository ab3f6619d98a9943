"""The fused training augmentation: sample a crop window, decode only that window.

A random crop window (35%..100% of the area, aspect 3:4..4:3 at strength 1) is sampled
from each image's recorded size, only that window is decoded with
``tf.image.decode_and_crop_jpeg`` at a DCT-domain downscale (``pipeline.decode``), then
resized, flipped and given a small brightness/contrast jitter. Cropping before decoding
means the pixels outside the window are never produced.

Parameters are sampled for a whole batch at once (``sample_augmentation``) and the decode
runs as one ``tf.map_fn`` per batch (``augment_batch``): per-element tf.data stages cost
~5-10 us per op and element, as much as decoding a small JPEG, so this machinery is paid
per batch, not per image. Stateless random ops keyed per batch make it reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from pipeline import decode

# Training crop distribution at strength 1.0: the crop keeps 35%..100% of the image area
# with an aspect ratio within 3:4..4:3 of the image's. Milder than Inception's 8%..100%:
# at 128x128 a cat's face crop loses the cue that separates it from a dog's.
_MIN_AREA_AT_FULL_STRENGTH = 0.35
_MAX_ASPECT_CHANGE_AT_FULL_STRENGTH = 4.0 / 3.0
# Photometric jitter at strength 1.0, as fractions of the [0, 255] range / contrast factor.
_BRIGHTNESS_DELTA_AT_FULL_STRENGTH = 0.08
_CONTRAST_DELTA_AT_FULL_STRENGTH = 0.15


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
    target_height, target_width = decode.size_pair(image_size)
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

    ratio = decode.choose_ratio(crop_heights, crop_widths, target_height, target_width, max_ratio)
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
        "ratio_index": decode.ratio_index(ratio),
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
    target_height, target_width = decode.size_pair(image_size)
    crop = decode.decode_crop_with_ratio(
        encoded, params["ratio_index"], params["window"], max_ratio
    )
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
        height, width = decode.jpeg_shape(encoded)
    uniforms = tf.random.stateless_uniform([1, NUM_UNIFORMS], tf.cast(seed, tf.int64))
    params = sample_augmentation(
        tf.reshape(height, [1]), tf.reshape(width, [1]), uniforms, image_size, strength
    )
    return decode_augmented(
        encoded, {k: v[0] for k, v in params.items()}, image_size, jitter=strength > 0
    )


def augment_batch(
    encoded: tf.Tensor,
    heights: tf.Tensor,
    widths: tf.Tensor,
    batch_seed: tf.Tensor,
    image_size: tuple[int, int],
    strength: float,
    max_ratio: int,
) -> tf.Tensor:
    """Fused augmentation of one batch of encoded JPEGs: uint8 [B, H, W, 3].

    The parameters (crop window, DCT ratio, flip, jitter) are sampled for the whole
    batch at once from ``batch_seed`` (int [2]), then a ``tf.map_fn`` decodes each
    example's window (``decode_augmented``).
    """
    uniforms = tf.random.stateless_uniform([tf.shape(encoded)[0], NUM_UNIFORMS], batch_seed)
    params = sample_augmentation(heights, widths, uniforms, image_size, strength, max_ratio)
    jitter = strength > 0

    def decode_one(args):
        one_encoded, one_params = args
        return decode_augmented(
            one_encoded, one_params, image_size, jitter=jitter, max_ratio=max_ratio
        )

    return tf.map_fn(
        decode_one,
        (encoded, params),
        fn_output_signature=tf.TensorSpec([*image_size, 3], tf.uint8),
        # Sequential within a batch: batches already run in parallel across cores
        # (the pipeline's num_parallel_calls), and extra loop threads measured no faster.
        parallel_iterations=1,
    )
