"""keras-cv augmentation for batches: on the accelerator as the model's first layers, or in tf.data.

On a CPU host these layers cost several times what the fused crop-decode costs (the
figure, and the command that measures it, are in BUILD_NOTES.md: the benchmark's
``pipeline_train_keras_cv`` row against ``pipeline_train_fused``), so the training hot
path uses the fused decode and this augmenter is for (a) the model's first layers on a
GPU/TPU (``augment="keras_cv_model"``), where it runs only in training (Keras'
recommended place on an accelerator), or (b) tf.data when the richer geometry is wanted
and the host has cores to spare (``augment="keras_cv_data"``).
"""

from __future__ import annotations

import keras
import keras_cv
import tensorflow as tf

# Ranges at strength 1.0 (fractions of the image size / of a full turn). Small: cats and
# dogs photos are upright and roughly centred.
_ROTATION_AT_FULL_STRENGTH = 0.05  # +-18 degrees
_ZOOM_AT_FULL_STRENGTH = 0.15
_TRANSLATION_AT_FULL_STRENGTH = 0.1


@keras.saving.register_keras_serializable(package="pipeline")
class KerasCvAugment(keras.layers.Layer):
    """keras-cv flip, rotation, zoom and translation, applied only when ``training``.

    keras-cv 0.9's augmentation layers ignore the ``training`` argument (they augment in
    ``predict`` and ``evaluate`` too), unlike Keras' own preprocessing layers; this
    wrapper restores the Keras contract so the augmenter can sit inside a model.
    """

    def __init__(self, strength: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if strength < 0:
            raise ValueError(f"augment strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self.seed = seed

        def layer_seed(offset: int) -> int | None:
            return None if seed is None else seed + offset

        self.augmenters = [keras_cv.layers.RandomFlip("horizontal", seed=layer_seed(0))]
        if strength > 0:
            # "reflect" fill: no black corners for the model to learn as a cue.
            self.augmenters += [
                keras_cv.layers.RandomRotation(
                    _ROTATION_AT_FULL_STRENGTH * strength, fill_mode="reflect", seed=layer_seed(1)
                ),
                keras_cv.layers.RandomZoom(
                    _ZOOM_AT_FULL_STRENGTH * strength, fill_mode="reflect", seed=layer_seed(2)
                ),
                keras_cv.layers.RandomTranslation(
                    _TRANSLATION_AT_FULL_STRENGTH * strength,
                    _TRANSLATION_AT_FULL_STRENGTH * strength,
                    fill_mode="reflect",
                    seed=layer_seed(3),
                ),
            ]

    def call(self, images, training=None):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training:
            return images
        for layer in self.augmenters:
            images = layer(images)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def make_augmenter(strength: float = 1.0, seed: int | None = None) -> keras.Sequential:
    """A ``keras.Sequential`` holding keras-cv flip, rotation, zoom and translation.

    Takes uint8 or float [B, H, W, 3] images in the [0, 255] range and returns float
    images (the layer's compute dtype) of the same size and range; ``to_uint8`` converts
    back. It augments only when called with ``training=True`` (inside a model: only
    during ``fit``), like Keras' own preprocessing layers.

    Args:
      strength: Scales every range; 0 leaves only the horizontal flip.
      seed: Seeds the layers (each gets its own, derived from it).

    Returns:
      The augmenter, named ``augment``.

    Raises:
      ValueError: If ``strength`` is negative.
    """
    return keras.Sequential([KerasCvAugment(strength, seed)], name="augment")


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Rounds float images in [0, 255] back to uint8 (saturating)."""
    if images.dtype == tf.uint8:
        return images
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0.0, 255.0), tf.uint8)
