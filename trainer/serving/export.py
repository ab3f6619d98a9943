"""A trained ``model.keras`` -> a serving SavedModel and TFLite models (the `export_model` library).

What ``export`` writes into the output folder:

* ``saved_model/``: the serving SavedModel (``trainer.serving.saved_model``): photo files' bytes in,
  P(dog) and the class out, with every photo prepared in the graph exactly as
  ``make_records`` stored the training photos and ``predict`` prepares them.
* ``model_float16.tflite``, ``model_int8.tflite`` (``trainer.serving.tflite``): uint8 images
  [N, H, W, 3] -> P(dog) [N], float16 weights, or int8 post-training quantization
  calibrated on images of the *training* records decoded as validation decodes them.
  ``trainer.serving.tflite_client`` turns photo files into their input.
* ``metadata.json``: input size, labels and the decision threshold, how to prepare a
  photo (the training records' settings), the source model's val accuracy, each file's
  sha256, the signatures, the TFLite ops left in float and how far each artifact's
  P(dog) is from the Keras model's on calibration images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from core.files import sha256_file
from pipeline import dataset as dataset_lib
from records import schema
from records.manifest import Manifest
from trainer.inference import decision
from trainer.models import files as model_files
from trainer.models import model as model_lib
from trainer.serving import CALIBRATION_IMAGES, saved_model
from trainer.serving import tflite as tflite_lib
from trainer.serving.saved_model import BYTES_SIGNATURE, IMAGES_SIGNATURE, SAVED_MODEL_DIR
from trainer.serving.tflite import QUANTIZATIONS, tflite_name
from trainer.serving.tflite_client import METADATA_NAME


def representative_images(
    manifest: Manifest, image_size: tuple[int, int], count: int
) -> np.ndarray:
    """The first ``count`` training images, decoded as validation decodes them: uint8 [n, H, W, 3].

    The training split in shard order (shards hold records sorted by sha256, so classes
    are mixed), without augmentation: the pixels a deployed model will see.
    """
    data = dataset_lib.eval_dataset(manifest, 32, split="train", image_size=image_size)
    batches, total = [], 0
    for images, _ in data:
        batches.append(images.numpy())
        total += len(batches[-1])
        if total >= count:
            break
    return np.concatenate(batches)[:count]


def _files(folder: str) -> Iterable[str]:
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            yield os.path.join(root, name)


def _val_accuracy(model_path: str, metrics: dict) -> float | None:
    # train writes best.keras (the best epoch's weights) and model.keras (the best epoch's
    # too by default, the last one's with --norestore_best: metrics' model_val_accuracy;
    # folders from before it existed hold the last epoch's).
    if os.path.basename(model_path) == model_files.BEST_MODEL_NAME:
        return metrics.get("best_val_accuracy")
    return metrics.get("model_val_accuracy", metrics.get("final_val_accuracy"))


def export(
    model_path: str,
    output_dir: str,
    records_dir: str | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    overwrite: bool = False,
) -> dict:
    """Writes the SavedModel, the TFLite models and ``metadata.json``; returns the metadata.

    Everything is written into a temporary folder beside ``output_dir`` and renamed into
    place at the end, so ``output_dir`` holds a whole export or none.

    Args:
      model_path: A ``.keras`` model saved by ``train``.
      output_dir: The folder to create.
      records_dir: The training records (default: the ``records_dir`` named in the
        ``metrics.json`` beside the model). Needed for the int8 model's calibration.
      calibration_images: Training images the int8 quantization is calibrated on.
      overwrite: Replace an existing ``output_dir``.

    Raises:
      FileNotFoundError: No model, or the records cannot be found.
      FileExistsError: ``output_dir`` exists and ``overwrite`` is False.
      ValueError: Not a loadable model, or records that contradict the model's.
    """
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"--output_dir={output_dir} already exists; pass --overwrite to replace it, or "
            "choose another --output_dir"
        )
    model = model_lib.load_model(model_path)
    trained = model_files.trained_on(model_path, records_dir)
    if trained.manifest is None:
        raise FileNotFoundError(
            f"cannot find the training records of {model_path} (no metrics.json beside it "
            "naming a records_dir that exists): pass --records_dir=<the records it was "
            "trained on>; the int8 model is calibrated on their training images"
        )
    image_size = model_lib.input_size(model)
    calibration = representative_images(trained.manifest, image_size, calibration_images)
    logging.info("calibration: %d training images from %s", len(calibration), trained.manifest.path)
    keras_p_dog = _in_batches(lambda images: saved_model.p_dog(model, images), calibration)

    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        saved_model_path = os.path.join(staging, SAVED_MODEL_DIR)
        saved_model.write_saved_model(model, saved_model_path, trained.store)
        logging.info("wrote the SavedModel")
        # Read back as a client would: the signature on the calibration images.
        served = tf.saved_model.load(saved_model_path).signatures[IMAGES_SIGNATURE]
        agreement = {
            "saved_model": _agreement(
                keras_p_dog, _in_batches(lambda images: served(images=images)["p_dog"], calibration)
            )
        }
        ops = {}
        for quantization in QUANTIZATIONS:
            content = tflite_lib.tflite_model(model, quantization, calibration)
            with open(os.path.join(staging, tflite_name(quantization)), "wb") as f:
                f.write(content)
            ops[quantization] = tflite_lib.ops(content)
            agreement[quantization] = _agreement(
                keras_p_dog, tflite_lib.p_dog(tflite_lib.interpreter(content), calibration)
            )
            logging.info(
                "wrote %s: %d bytes; ops left in float: %s; max |dP(dog)| vs Keras %.4f",
                tflite_name(quantization),
                len(content),
                ", ".join(ops[quantization]["float_ops"]) or "none",
                agreement[quantization]["max_abs_diff_p_dog"],
            )
        metadata = _metadata(model_path, image_size, trained, calibration, agreement, ops)
        metadata["files"] = {
            os.path.relpath(path, staging): {
                "bytes": os.path.getsize(path),
                "sha256": sha256_file(path),
            }
            for path in _files(staging)
        }
        with open(os.path.join(staging, METADATA_NAME), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.rename(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info("export done: %s", output_dir)
    return metadata


def _in_batches(p_dog_fn, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    # All 200 calibration images in one call took 9.8 GB of activations (efficientnet_lite0
    # at 160 px); 32 at a time keep the export's memory near the model's.
    return np.concatenate(
        [
            np.asarray(p_dog_fn(tf.constant(images[i : i + batch_size])))
            for i in range(0, len(images), batch_size)
        ]
    )


def _agreement(reference: np.ndarray, p_dog) -> dict:
    p_dog = np.asarray(p_dog, dtype=np.float64)
    return {
        "images": int(len(reference)),
        "max_abs_diff_p_dog": float(np.max(np.abs(p_dog - reference))),
        "same_class": float(np.mean(decision.class_id(p_dog) == decision.class_id(reference))),
    }


def _metadata(
    model_path, image_size, trained: model_files.TrainedOn, calibration, agreement, ops
) -> dict:
    height, width = image_size
    settings = trained.metrics.get("settings") or {}
    outputs = {
        "p_dog": "float32 [N]; NaN where valid is false",
        "class_id": f"int32 [N]: index into labels (dog when p_dog > {decision.THRESHOLD}); "
        "-1 where valid is false",
        "class_name": "string [N]; empty where valid is false",
        "valid": "bool [N]",
        "status": "string [N]: ok, or why the row was refused (empty, not an image, nested "
        "archive, image too large, truncated, cannot decode)",
    }
    return {
        "source_model": {
            "path": os.path.abspath(model_path),
            "sha256": sha256_file(model_path),
            "backbone": settings.get("backbone"),
            "val_accuracy": _val_accuracy(model_path, trained.metrics),
            "final_val_accuracy": trained.metrics.get("final_val_accuracy"),
            "best_val_accuracy": trained.metrics.get("best_val_accuracy"),
        },
        "input": {
            "height": height,
            "width": width,
            "channels": 3,
            "pixels": "RGB uint8 0..255, the whole image resized to height x width (aspect "
            "ratio not kept), as pipeline.decode.decode_and_resize does",
        },
        "labels": list(schema.CLASS_NAMES),
        "threshold": decision.THRESHOLD,
        # How a photo file becomes the input (records.photo.StoreSettings; the client
        # helper and the SavedModel's graph use these).
        "prepare": dataclasses.asdict(trained.store),
        "prepare_source": trained.source,
        "records_dir": trained.manifest.records_dir if trained.manifest else None,
        "signatures": {
            BYTES_SIGNATURE: {
                "inputs": {
                    "image_bytes": "string [N]: photo files (JPEG, PNG, GIF, BMP, WebP), "
                    "prepared in the graph as make_records stores them (records.photo)"
                },
                "outputs": outputs,
            },
            IMAGES_SIGNATURE: {
                "inputs": {"images": f"uint8 [N, {height}, {width}, 3]"},
                "outputs": "as serving_default (valid always true)",
            },
        },
        "tflite": {
            q: {
                "file": tflite_name(q),
                "inputs": {"images": f"uint8 [N, {height}, {width}, 3]"},
                "outputs": {"p_dog": "float32 [N]"},
                "client": "trainer.serving.tflite_client.TFLiteClient prepares photo files for it",
                **ops[q],
            }
            for q in QUANTIZATIONS
        },
        "calibration": {"split": "train", "images": int(len(calibration))},
        "agreement_with_keras_on_calibration_images": agreement,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
