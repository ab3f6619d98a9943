"""The TFLite client helper: photo files -> P(dog) with an exported TFLite model.

A TFLite model takes uint8 images at its input size; a photo file has to become that
image exactly as the training records' photos did. This helper does it with the one
definition (``pipeline.photos.photo_batch``: ``records.photo.prepare`` with the
settings ``export_model`` wrote into ``metadata.json``, then validation's decode), and
runs the model with LiteRT. It needs TensorFlow for the decode (the same ops the
SavedModel runs); a device without TensorFlow must reproduce ``records.photo``'s rules.

    client = TFLiteClient("build/export")            # model_float16.tflite
    for row in client.predict([open("cat.jpg", "rb").read()]):
        print(row.class_name, row.p_dog, row.status)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from pipeline import photos
from records import photo_header
from records.photo import StoreSettings
from trainer.inference import decision
from trainer.serving import tflite as tflite_lib

METADATA_NAME = "metadata.json"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One photo's answer: as the SavedModel's outputs, for one row."""

    p_dog: float
    class_name: str
    valid: bool
    status: str


class TFLiteClient:
    """Runs an exported TFLite model on photo files' bytes.

    Args:
      export_dir: A folder written by ``export_model`` (metadata.json and the models).
      quantization: Which TFLite model, one of ``trainer.serving.tflite.QUANTIZATIONS``.
      num_threads: LiteRT's threads (None: its default).

    Raises:
      FileNotFoundError: No metadata.json or no such model in ``export_dir``.
    """

    def __init__(self, export_dir: str, quantization: str = "float16", num_threads=None):
        metadata_path = os.path.join(export_dir, METADATA_NAME)
        if not os.path.isfile(metadata_path):
            raise FileNotFoundError(
                f"no {METADATA_NAME} in {export_dir}: pass a folder written by export_model"
            )
        with open(metadata_path, encoding="utf-8") as f:
            metadata = json.load(f)
        self.store = StoreSettings(**metadata["prepare"])
        self.image_size = (metadata["input"]["height"], metadata["input"]["width"])
        model_path = os.path.join(export_dir, tflite_lib.tflite_name(quantization))
        with open(model_path, "rb") as f:
            self.interpreter = tflite_lib.interpreter(f.read(), num_threads)
        self._prepare = tf.function(
            lambda image_bytes: photos.photo_batch(image_bytes, self.store, self.image_size),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )

    def images(self, photo_files: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Photo files -> (uint8 images [N, H, W, 3], ``records.photo`` status [N])."""
        images, status = self._prepare(tf.constant(list(photo_files), tf.string))
        return images.numpy(), status.numpy()

    def predict(self, photo_files: Sequence[bytes]) -> list[Prediction]:
        """One ``Prediction`` per file; a refused file gets NaN, "" and its status."""
        images, status = self.images(photo_files)
        valid = status == photo_header.OK
        p_dog = np.full(len(images), np.nan)
        if valid.any():
            p_dog[valid] = tflite_lib.p_dog(self.interpreter, images[valid])
        return [
            Prediction(
                p_dog=float(p),
                class_name=decision.class_name(p) if ok else "",
                valid=bool(ok),
                status=photo_header.STATUSES[code],
            )
            for p, ok, code in zip(p_dog, valid, status)
        ]
