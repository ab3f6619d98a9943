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
  ``tf.image.decode_and_crop_jpeg`` decodes only that window (``pipeline.fused``; with
  ``ratio`` > 1 the crop window is given in the downscaled image's coordinates).

Everything here is graph-safe (usable inside ``Dataset.map`` and ``tf.function``) and
returns ``uint8`` images: normalisation lives in the model, so a saved model takes raw RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# The scales libjpeg's DCT-domain downscale supports through tf.io.decode_jpeg.
RATIOS: tuple[int, ...] = (1, 2, 4, 8)


def size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
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


def ratio_index(ratio: tf.Tensor) -> tf.Tensor:
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


def decode_crop_with_ratio(
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


def resize_to_uint8(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
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
    smallest_target = min(size_pair(image_size))
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
    target_height, target_width = size_pair(image_size)
    if max_ratio > 1:
        if height is None or width is None:
            height, width = jpeg_shape(encoded)
        ratio = choose_ratio(height, width, target_height, target_width, max_ratio)
        image = _decode_with_ratio(encoded, ratio_index(ratio), max_ratio)
    else:
        image = _decode_with_ratio(encoded, tf.constant(0), 1)
    return resize_to_uint8(image, target_height, target_width)


def decode_and_resize_batch(
    encoded: tf.Tensor,
    heights: tf.Tensor,
    widths: tf.Tensor,
    image_size: int | Sequence[int],
    max_ratio: int = 8,
) -> tf.Tensor:
    """``decode_and_resize`` over a batch of encoded JPEGs: uint8 [B, H, W, 3].

    One ``tf.map_fn`` per batch, so tf.data's per-element overhead is paid per batch.
    """
    image_size = size_pair(image_size)
    return tf.map_fn(
        lambda args: decode_and_resize(args[0], image_size, args[1], args[2], max_ratio),
        (encoded, heights, widths),
        fn_output_signature=tf.TensorSpec([*image_size, 3], tf.uint8),
        # Sequential within a batch: batches already run in parallel across cores.
        parallel_iterations=1,
    )
