"""The fused training augmentation: sample a crop window, decode only that window.

A random crop window (``pipeline.crop_jitter``, the sampler the decode-once crop shares)
is drawn for each image's recorded size, only that window is decoded with
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

from pipeline import crop_jitter, decode


def sample_augmentation(
    heights: tf.Tensor,
    widths: tf.Tensor,
    uniforms: tf.Tensor,
    image_size: int | Sequence[int],
    strength: float = 1.0,
    max_ratio: int = 8,
) -> dict[str, tf.Tensor]:
    """Augmentation parameters for a group of images, vectorised over the group.

    The crop window, flip and jitter are ``crop_jitter.sample``'s in whole pixels of the
    recorded size; here the window also gets its DCT ratio and is mapped into the
    coordinates of the image downscaled by it.

    Args:
      heights: int [N] full-resolution image heights.
      widths: int [N] full-resolution image widths.
      uniforms: float [N, crop_jitter.NUM_UNIFORMS] uniform [0, 1) random numbers.
      image_size: The size the crops are resized to (it chooses the DCT ratio).
      strength: As ``crop_jitter.sample``'s.
      max_ratio: Largest DCT ratio to use.

    Returns:
      Dict of per-image tensors: ``window`` int32 [N, 4] as [top, left, height, width] in
      the coordinates of the image downscaled by its ratio; ``ratio_index`` int32 [N]
      into ``decode.RATIOS``; ``flip`` bool [N]; ``scale`` and ``offset`` float32 [N] for
      the pixel jitter ``x * scale + offset``.

    Raises:
      ValueError: ``strength`` out of range.
    """
    target_height, target_width = decode.size_pair(image_size)
    heights = tf.cast(heights, tf.float32)
    widths = tf.cast(widths, tf.float32)
    draw = crop_jitter.sample(uniforms, heights, widths, strength, whole_pixels=True)

    ratio = decode.choose_ratio(draw.heights, draw.widths, target_height, target_width, max_ratio)
    ratio_float = tf.cast(ratio, tf.float32)
    # With ratio r, decode_and_crop_jpeg takes the window in the downscaled image's
    # coordinates, whose size is ceil(size / r); clamp so rounding never leaves it.
    scaled_heights = tf.math.ceil(heights / ratio_float)
    scaled_widths = tf.math.ceil(widths / ratio_float)
    # The window's edges map outwards (floor the start, ceil the end), so a whole-image
    # window stays the whole downscaled image.
    bottoms = tf.minimum(tf.math.ceil((draw.tops + draw.heights) / ratio_float), scaled_heights)
    rights = tf.minimum(tf.math.ceil((draw.lefts + draw.widths) / ratio_float), scaled_widths)
    tops = tf.minimum(tf.floor(draw.tops / ratio_float), scaled_heights - 1.0)
    lefts = tf.minimum(tf.floor(draw.lefts / ratio_float), scaled_widths - 1.0)
    crop_heights = tf.maximum(bottoms - tops, 1.0)
    crop_widths = tf.maximum(rights - lefts, 1.0)
    return {
        "window": tf.cast(tf.stack([tops, lefts, crop_heights, crop_widths], axis=1), tf.int32),
        "ratio_index": decode.ratio_index(ratio),
        "flip": draw.flip,
        "scale": draw.scale,
        "offset": draw.offset,
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
    image = crop_jitter.jitter_to_uint8(image, params["scale"], params["offset"], jitter)
    # tf.cond, not tf.where: a select broadcasting a scalar condition over the image
    # measured ~0.4 ms per image, more than the decode of a small JPEG; a batch-level
    # flip (dynamic_partition/stitch) measured no faster than this.
    return tf.cond(params["flip"], lambda: tf.reverse(image, axis=[1]), lambda: image)


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
    uniforms = crop_jitter.stateless_uniforms(tf.shape(encoded)[0], batch_seed)
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
