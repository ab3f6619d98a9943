"""The training augmentation, defined once: its ranges and the sampler that draws from them.

Both places that crop a training image take the crop window, the flip and the photometric
jitter from ``sample``, with the ranges of ``CROP_JITTER``: the fused decode
(``pipeline.fused``, a window of the JPEG bytes) and the decode-once crop
(``pipeline.crop_augment``, a box of decoded pixels), as the TF Model Garden drives its
crop on bytes and on decoded pixels from one ``crop_area_range``. ``jitter_to_uint8``
applies the jitter for both.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class CropJitter:
    """The augmentation's ranges at strength 1 (``--augment_strength`` scales them).

    Attributes:
      min_area: The smallest crop, as a fraction of the image's area: crops keep
        ``min_area``..100% of it. Milder than Inception's 8%: at 128x128 a crop of a
        cat's face loses the cue that separates it from a dog's.
      max_aspect_change: The crop's aspect ratio is the image's times 1/x..x.
      brightness: The largest brightness shift, as a fraction of the 0..255 range.
      contrast: The largest contrast change: a factor 1 +- ``contrast`` around mid-grey.
    """

    min_area: float = 0.35
    max_aspect_change: float = 4.0 / 3.0
    brightness: float = 0.08
    contrast: float = 0.15

    @property
    def max_strength(self) -> float:
        """The strength at which the smallest crop's area reaches 0 (above it, below 0)."""
        return 1.0 / (1.0 - self.min_area)


CROP_JITTER = CropJitter()
# Uniform random numbers per image: area, aspect, top, left, flip, contrast, brightness.
NUM_UNIFORMS = 7


class Draw(NamedTuple):
    """One image's augmentation per row, as ``sample`` draws it (float32 [N] unless noted).

    The window is in the units of the ``heights`` and ``widths`` given to ``sample``.
    """

    tops: tf.Tensor
    lefts: tf.Tensor
    heights: tf.Tensor
    widths: tf.Tensor
    flip: tf.Tensor  # bool [N]
    scale: tf.Tensor  # The jitter ``x * scale + offset`` (``jitter_to_uint8``).
    offset: tf.Tensor


def stateless_uniforms(count: tf.Tensor | int, seed: tf.Tensor) -> tf.Tensor:
    """The [count, NUM_UNIFORMS] uniform [0, 1) numbers ``sample`` takes, from a stateless seed.

    Args:
      count: How many images.
      seed: int [2]; the same seed gives the same numbers.
    """
    return tf.random.stateless_uniform([count, NUM_UNIFORMS], seed)


def sample(
    uniforms: tf.Tensor,
    heights: tf.Tensor | float,
    widths: tf.Tensor | float,
    strength: float,
    *,
    whole_pixels: bool,
    ranges: CropJitter = CROP_JITTER,
) -> Draw:
    """Inception-style crop windows, flips and jitter for a group of images, vectorised.

    A random fraction of the area (``ranges.min_area``..1 at strength 1) with a random
    aspect change (1/x..x, x = ``ranges.max_aspect_change``) at a random position; a flip
    with probability 1/2; a brightness shift and a contrast change around mid-grey. Working on a group at once matters: inside tf.data
    each scalar op costs ~5-10 us per call, and per image there would be dozens, as much
    as decoding a small JPEG.

    Args:
      uniforms: float [N, NUM_UNIFORMS] uniform [0, 1) numbers (``stateless_uniforms``, or
        a Keras seed generator's).
      heights: [N] image heights (or one for all) in the window's units: pixels, or 1.0
        for boxes normalised to the image.
      widths: As ``heights``.
      strength: Scales every range; 0 gives the whole image, flipped or not, no jitter.
      whole_pixels: True: the window is whole pixels, at least one (a JPEG window);
        False: fractional (a ``crop_and_resize`` box).
      ranges: The ranges at strength 1.

    Returns:
      The window, flip and jitter of each image.

    Raises:
      ValueError: ``strength`` outside 0..``ranges.max_strength``.
    """
    if not 0 <= strength <= ranges.max_strength:
        raise ValueError(
            f"augment strength must be in 0..{ranges.max_strength:.2f}, got {strength}: above "
            f"it the smallest crop (1 - {1 - ranges.min_area:.2f} x strength of the area) "
            "would be below 0"
        )
    heights = tf.cast(heights, tf.float32)
    widths = tf.cast(widths, tf.float32)
    min_area = 1.0 - (1.0 - ranges.min_area) * strength
    log_aspect = tf.math.log(1.0 + (ranges.max_aspect_change - 1.0) * strength)
    area = (min_area + (1.0 - min_area) * uniforms[:, 0]) * heights * widths
    aspect = tf.exp(log_aspect * (2.0 * uniforms[:, 1] - 1.0)) * widths / heights
    if whole_pixels:
        crop_heights = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, heights)
        crop_widths = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, widths)
        tops = tf.floor(uniforms[:, 2] * (heights - crop_heights + 1.0))
        lefts = tf.floor(uniforms[:, 3] * (widths - crop_widths + 1.0))
    else:
        crop_heights = tf.minimum(tf.sqrt(area / aspect), heights)
        crop_widths = tf.minimum(tf.sqrt(area * aspect), widths)
        tops = uniforms[:, 2] * (heights - crop_heights)
        lefts = uniforms[:, 3] * (widths - crop_widths)
    brightness = ranges.brightness * strength * 255.0
    contrast = ranges.contrast * strength
    scale = 1.0 + contrast * (2.0 * uniforms[:, 5] - 1.0)
    # Contrast around mid-grey (not the image mean: that would cost a pass over pixels),
    # brightness as a shift; +0.5 makes the final truncating cast round.
    offset = 127.5 * (1.0 - scale) + brightness * (2.0 * uniforms[:, 6] - 1.0) + 0.5
    return Draw(tops, lefts, crop_heights, crop_widths, uniforms[:, 4] < 0.5, scale, offset)


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
