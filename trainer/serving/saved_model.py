"""The serving SavedModel: a trained model plus the one photo chain, in one graph.

``write_saved_model`` writes a TensorFlow SavedModel that needs neither Keras nor this
project to load (``tf.saved_model.load``), with two signatures:

* ``serving_default(image_bytes: tf.string [N])``: photo files as they are (JPEG, PNG,
  GIF, BMP, WebP; any size, EXIF-rotated or not). Each row goes through
  ``pipeline.photos.photo_batch``: ``records.photo.prepare`` with the training records'
  settings (as ``make_records`` stored the training photos), then validation's decode.
  ``predict`` runs the same function, so both give the same P(dog) for the same bytes,
  up to float round-off in the model.
* ``serving_images(images: tf.uint8 [N, H, W, 3])``: RGB images already at the model's
  input size (what the model itself takes).

Both return ``p_dog`` (float32 [N]), ``class_id`` (int32 [N]: 0 cat, 1 dog, by
``trainer.inference.decision``; -1 for a refused row), ``class_name`` (string [N]; empty for such a
row), ``valid`` (bool [N]) and ``status`` (string [N]: "ok", or why the row was refused:
``records.photo_header.STATUSES``, e.g. "truncated", "image too large", "cannot decode"). A bad
row never fails the others; an empty batch gives empty outputs.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline import photos
from records import photo_header, schema
from records.photo import StoreSettings
from trainer.inference import decision
from trainer.models import model as model_lib

SAVED_MODEL_DIR = "saved_model"
BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"


def outputs(p_dog: tf.Tensor, status: tf.Tensor) -> dict[str, tf.Tensor]:
    """The signatures' outputs from P(dog) [N] and the rows' ``photo`` status [N]."""
    valid = tf.equal(status, photo_header.OK)
    p_dog = tf.where(valid, p_dog, tf.constant(np.nan, tf.float32))
    class_id = tf.where(valid, decision.class_id_tensor(p_dog), -1)
    names = tf.constant(list(schema.CLASS_NAMES))
    class_name = tf.where(valid, tf.gather(names, tf.maximum(class_id, 0)), "")
    return {
        "p_dog": p_dog,
        "class_id": class_id,
        "class_name": class_name,
        "valid": valid,
        "status": tf.gather(tf.constant(list(photo_header.STATUSES)), status),
    }


def p_dog(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """P(dog) float32 [N] of uint8 images (the model takes raw RGB 0..255)."""
    probabilities = model(tf.cast(images, tf.float32), training=False)
    return tf.cast(model_lib.prob_dog(probabilities), tf.float32)


def _p_dog_any_batch(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    # The model itself fails on an empty batch (batch norm: "Incompatible shapes: [32] vs.
    # [0,32,32,3]"); a server may well receive one.
    return tf.cond(
        tf.shape(images)[0] > 0,
        lambda: p_dog(model, images),
        lambda: tf.zeros([0], tf.float32),
    )


def write_saved_model(model: keras.Model, path: str, store: StoreSettings) -> None:
    """Writes the serving SavedModel of ``model`` to ``path``.

    Args:
      model: The trained Keras model.
      path: The SavedModel folder to write.
      store: How the model's training records stored photos
        (``trainer.models.files.trained_on``); the bytes signature prepares photos so.
    """
    image_size = model_lib.input_size(model)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        images, status = photos.photo_batch(image_bytes, store, image_size)
        return outputs(_p_dog_any_batch(model, images), status)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.uint8, name="images")])
    def serve_images(images):
        return outputs(_p_dog_any_batch(model, images), tf.zeros([tf.shape(images)[0]], tf.int32))

    # No archive.track(model): the archive keeps the variables the endpoints use anyway,
    # and tracking the model as well stored every weight twice (Keras 3.15: once as the
    # Keras variable, once as the tf.Variable the functions capture), doubling the size.
    archive = keras.export.ExportArchive()
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes)
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images)
    archive.write_out(path, verbose=False)
