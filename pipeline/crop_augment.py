"""Random-resized crop, flip and jitter of already-decoded images, on the host or the accelerator.

The decode-once input mode (``pipeline.decode_once``) keeps every training image as a
fixed-size uint8 array, so augmentation is pure array work on a batch. Its crop box, flip
and jitter come from the sampler the fused crop-decode (``pipeline.fused``) uses,
``pipeline.crop_jitter``, as fractions of the image instead of whole pixels; the crop is
resized to the output size.

* ``augment_batch`` (host): one ``tf.image.crop_and_resize`` for the whole batch (the
  flip is the crop box with its x-ends swapped), then one multiply-add and a rounding cast.
* ``DecodedCropAugment`` (accelerator): the same as a Keras layer placed first in the
  model, training only. ``CropAndResize`` has no XLA kernel, so the layer samples
  bilinearly with two batched matrix products (``bilinear_crops``), which XLA and GPUs
  run well; in inference it only resizes to the output size (identity on images that
  already have it), so validation batches pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from pipeline import crop_jitter, decode


def sample_boxes(uniforms: tf.Tensor, strength: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Crop boxes and jitter for a batch of square images, from uniform [0, 1) numbers.

    Args:
      uniforms: float [N, crop_jitter.NUM_UNIFORMS].
      strength: As ``crop_jitter.sample``'s.

    Returns:
      (boxes float [N, 4] as normalised [y1, x1, y2, x2] with x1 > x2 for a flipped crop,
      scale float [N], offset float [N]) for ``crop_jitter.jitter_to_uint8``.

    Raises:
      ValueError: ``strength`` out of range.
    """
    # Sizes of 1.0: the window comes out as fractions of the image, a crop_and_resize box.
    draw = crop_jitter.sample(uniforms, 1.0, 1.0, strength, whole_pixels=False)
    rights = draw.lefts + draw.widths
    boxes = tf.stack(
        [
            draw.tops,
            tf.where(draw.flip, rights, draw.lefts),
            draw.tops + draw.heights,
            tf.where(draw.flip, draw.lefts, rights),
        ],
        axis=1,
    )
    return boxes, draw.scale, draw.offset


def augment_batch(
    images: tf.Tensor, batch_seed: tf.Tensor, image_size: int | Sequence[int], strength: float
) -> tf.Tensor:
    """Host-side augmentation of a batch: uint8 [B, S, S, 3] -> uint8 [B, H, W, 3]."""
    height, width = decode.size_pair(image_size)
    count = tf.shape(images)[0]
    uniforms = crop_jitter.stateless_uniforms(count, batch_seed)
    boxes, scale, offset = sample_boxes(uniforms, strength)
    crops = tf.image.crop_and_resize(images, boxes, tf.range(count), (height, width))
    return crop_jitter.jitter_to_uint8(crops, scale, offset, jitter=strength > 0)


def _interpolation(starts, ends, in_size: int, out_size: int) -> tf.Tensor:
    """[N, out_size, in_size] bilinear weights sampling [start, end] (normalised) as
    ``tf.image.crop_and_resize`` does: out pixel i at start*(in-1) + i*(end-start)*(in-1)/(out-1)."""
    steps = tf.range(out_size, dtype=tf.float32) / float(max(out_size - 1, 1))
    positions = (starts[:, None] + (ends - starts)[:, None] * steps[None, :]) * (in_size - 1)
    low = tf.clip_by_value(tf.floor(positions), 0.0, in_size - 1.0)
    fraction = positions - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, in_size - 1)
    return (
        tf.one_hot(low, in_size) * (1.0 - fraction)[..., None]
        + tf.one_hot(high, in_size) * fraction[..., None]
    )


def bilinear_crops(images: tf.Tensor, boxes: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """``tf.image.crop_and_resize`` (bilinear, boxes inside the image) as two batched
    matrix products: XLA-compilable. Returns float32 [B, H, W, C]."""
    height, width = image_size
    in_height, in_width = images.shape[1], images.shape[2]
    if in_height is None or in_width is None:
        in_height, in_width = tf.shape(images)[1], tf.shape(images)[2]
    rows = _interpolation(boxes[:, 0], boxes[:, 2], in_height, height)
    columns = _interpolation(boxes[:, 1], boxes[:, 3], in_width, width)
    pixels = tf.cast(images, tf.float32)
    return tf.einsum("bhy,bywc,bxw->bhxc", rows, pixels, columns)


@keras.saving.register_keras_serializable(package="pipeline")
class DecodedCropAugment(keras.layers.Layer):
    """Accelerator-side decode-once augmentation: the model's first layer, training only.

    Training: uint8 [B, S, S, 3] -> random-resized crop, flip, jitter -> uint8 [B, H, W, 3].
    Inference: resize to (H, W) only; images already that size pass unchanged.
    """

    def __init__(self, image_size: Sequence[int], strength: float = 1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(decode.size_pair(tuple(image_size)))
        self.strength = strength
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            if tuple(images.shape[1:3]) == self.image_size:
                return images
            resized = tf.image.resize(tf.cast(images, tf.float32), self.image_size)
            return tf.saturate_cast(resized + 0.5, tf.uint8)
        uniforms = keras.random.uniform(
            (tf.shape(images)[0], crop_jitter.NUM_UNIFORMS), seed=self.seed_generator
        )
        boxes, scale, offset = sample_boxes(uniforms, self.strength)
        crops = bilinear_crops(images, boxes, self.image_size)
        return crop_jitter.jitter_to_uint8(crops, scale, offset, jitter=self.strength > 0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_size, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "strength": self.strength,
            "seed": self.seed,
        }
