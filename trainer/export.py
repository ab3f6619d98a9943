"""A trained ``model.keras`` -> a serving SavedModel and TFLite models (the `export_model` library).

What ``export`` writes into the output folder:

* ``saved_model/``: a TensorFlow SavedModel that needs neither Keras nor this project to
  load (``tf.saved_model.load``), with two signatures:

  - ``serving_default(image_bytes: tf.string [N])``: encoded JPEG files. Each is decoded
    *inside the graph* by ``pipeline.decode.decode_and_resize``, the function
    ``pipeline.dataset.eval_dataset`` decodes the validation records with, so the record
    bytes ``evaluate`` scores give the same P(dog) here (no train/serve skew; tested). A
    photo larger than the training records is first shrunk and re-encoded as
    ``make_records`` stores it (``like_records``). EXIF orientation is not applied (as
    ``tf.io.decode_jpeg``; ``make_records`` stores photos upright): clients send upright
    pixels.
  - ``serving_images(images: tf.uint8 [N, H, W, 3])``: RGB images already at the model's
    input size (what the model itself takes).

  Both return ``p_dog`` (float32 [N]), ``class_id`` (int32 [N]: 0 cat, 1 dog, -1 for a row
  that could not be decoded), ``class_name`` (string [N], ``records.schema.CLASS_NAMES``;
  empty for such a row) and ``valid`` (bool [N]).

* ``model_float16.tflite``, ``model_int8.tflite``: uint8 images [N, H, W, 3] -> P(dog)
  [N], float16 weights, or int8 post-training quantization calibrated on images of the
  *training* records decoded as validation decodes them.
* ``metadata.json``: input size, labels, the training records' settings, the source
  model's val accuracy, each file's sha256, the signatures, the TFLite ops left in float
  and how far each artifact's P(dog) is from the Keras model's on calibration images.

Bad input to ``serving_default``: a row must be a *complete* JPEG (``complete_jpeg``:
starts with the SOI marker and ends with the EOI marker) or it is flagged, never decoded:
``valid`` False, ``p_dog`` NaN, ``class_id`` -1, ``class_name`` "". That catches the
common cases (a truncated upload, a PNG, HTML, an empty string) without failing the other
rows. A file whose markers are intact but whose bytes in between are damaged is decoded
as it is (JPEG has no checksum; libjpeg only warns), or, when its headers are broken,
fails the whole call with ``InvalidArgumentError``. An empty batch gets empty outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from core.files import sha256_file
from pipeline import dataset as dataset_lib
from pipeline import decode
from records import schema
from records.manifest import Manifest
from trainer import model as model_lib

SAVED_MODEL_DIR = "saved_model"
METADATA_NAME = "metadata.json"
BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"
# TFLite variants: file name and how the converter quantizes them.
QUANTIZATIONS: tuple[str, ...] = ("float16", "int8")
# The two markers every complete JPEG file starts and ends with (SOI + the next marker's
# 0xFF, EOI). Inside the entropy-coded data 0xFF is always followed by 0x00 or a restart
# marker, so a file cut anywhere after its headers cannot end in 0xFFD9.
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"


def tflite_name(quantization: str) -> str:
    return f"model_{quantization}.tflite"


def complete_jpeg(encoded: tf.Tensor) -> tf.Tensor:
    """True where ``encoded`` starts like a JPEG and ends with its end-of-image marker.

    Graph-safe, any shape of string tensor. ``tf.io.decode_jpeg`` fails the whole call on
    a truncated file (TF 2.21: "Premature end of JPEG data"), so truncated rows have to be
    recognised before decoding to be flagged one by one.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    length = tf.strings.length(encoded)
    starts = tf.strings.substr(encoded, 0, len(_JPEG_START)) == _JPEG_START
    # substr with a negative position fails on strings shorter than it: clamp at 0.
    tail = tf.strings.substr(
        encoded, tf.maximum(length - len(_JPEG_END), 0), tf.fill(tf.shape(length), len(_JPEG_END))
    )
    long_enough = length >= len(_JPEG_START) + len(_JPEG_END)
    return tf.logical_and(long_enough, tf.logical_and(starts, tail == _JPEG_END))


def like_records(encoded: tf.Tensor, max_short_side: int | None, jpeg_quality: int) -> tf.Tensor:
    """One JPEG as ``make_records`` would store it: larger photos shrunk and re-encoded.

    ``records.images.prepare`` stores a photo whose shorter side exceeds ``max_short_side``
    as a Lanczos-downscaled copy (``resized_size``) re-encoded at ``jpeg_quality``, and
    every other JPEG byte for byte. This is the same in the graph (TF's Lanczos-3 and
    libjpeg encoder instead of Pillow's: close, not bit-identical), so a client sending the
    original photo gets nearly what validation saw. Bytes that are already record-sized
    come back unchanged, so record bytes are still served exactly as ``evaluate`` scores
    them. (EXIF orientation is not applied: see the module docstring.)
    """
    if not max_short_side:
        return encoded
    height, width = decode.jpeg_shape(encoded)
    short = tf.minimum(height, width)

    def shrink():
        scale = max_short_side / tf.cast(short, tf.float64)
        # records.images.resized_size; tf.round rounds half to even, like Python's round.
        new_height = tf.where(
            height <= width,
            max_short_side,
            tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float64) * scale), tf.int32)),
        )
        new_width = tf.where(
            height <= width,
            tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float64) * scale), tf.int32)),
            max_short_side,
        )
        image = tf.io.decode_jpeg(encoded, channels=3)
        resized = tf.image.resize(
            image, tf.stack([new_height, new_width]), method="lanczos3", antialias=True
        )
        pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        return tf.io.encode_jpeg(pixels, quality=jpeg_quality)

    return tf.cond(short > max_short_side, shrink, lambda: encoded)


def decode_batch(
    image_bytes: tf.Tensor,
    image_size: tuple[int, int],
    max_short_side: int | None = None,
    jpeg_quality: int = 90,
) -> tuple[tf.Tensor, tf.Tensor]:
    """JPEG bytes [N] -> (uint8 images [N, H, W, 3], valid [N]), decoded as validation decodes.

    Each row goes through ``like_records`` (with the training records' ``max_short_side``
    and ``jpeg_quality``) and then ``pipeline.decode.decode_and_resize``. Rows that are not
    complete JPEGs are not decoded (zeros, ``valid`` False).
    """
    height, width = image_size
    valid = complete_jpeg(image_bytes)

    def decode_row(args):
        encoded, ok = args

        def decode_valid():
            stored = like_records(encoded, max_short_side, jpeg_quality)
            # eval_dataset passes max_ratio=max_useful_ratio(records' max_short_side): for
            # every image no larger than the records' this picks the same DCT ratio, and a
            # larger one (no max_short_side) still gets the cheap DCT downscale.
            return decode.decode_and_resize(stored, image_size)

        return tf.cond(ok, decode_valid, lambda: tf.zeros([height, width, 3], tf.uint8))

    images = tf.map_fn(
        decode_row,
        (image_bytes, valid),
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8),
    )
    return images, valid


def _outputs(p_dog: tf.Tensor, valid: tf.Tensor) -> dict[str, tf.Tensor]:
    """The signatures' outputs from P(dog) and the valid flags."""
    p_dog = tf.where(valid, p_dog, tf.constant(np.nan, tf.float32))
    # p > 0.5 is the softmax head's argmax (ties -> cat) and the sigmoid head's threshold,
    # as trainer.evaluation scores them.
    class_id = tf.where(valid, tf.cast(p_dog > 0.5, tf.int32), -1)
    names = tf.constant(list(schema.CLASS_NAMES))
    class_name = tf.where(valid, tf.gather(names, tf.maximum(class_id, 0)), "")
    return {"p_dog": p_dog, "class_id": class_id, "class_name": class_name, "valid": valid}


def _p_dog(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    # The model takes raw RGB 0..255 (its preprocessing is a layer inside it).
    probabilities = model(tf.cast(images, tf.float32), training=False)
    return tf.cast(model_lib.prob_dog(probabilities), tf.float32)


def _p_dog_any_batch(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    # The model itself fails on an empty batch (batch norm: "Incompatible shapes: [32] vs.
    # [0,32,32,3]"); a server may well receive one. Not in the TFLite graph (no control flow).
    return tf.cond(
        tf.shape(images)[0] > 0,
        lambda: _p_dog(model, images),
        lambda: tf.zeros([0], tf.float32),
    )


def image_size_of(model: keras.Model) -> tuple[int, int]:
    height, width = model.input_shape[1:3]
    return int(height), int(width)


def write_saved_model(
    model: keras.Model, path: str, max_short_side: int | None = None, jpeg_quality: int = 90
) -> None:
    """Writes the serving SavedModel (both signatures) of ``model`` to ``path``.

    ``max_short_side`` and ``jpeg_quality``: the training records' settings (see
    ``like_records``).
    """
    image_size = image_size_of(model)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        images, valid = decode_batch(image_bytes, image_size, max_short_side, jpeg_quality)
        return _outputs(_p_dog_any_batch(model, images), valid)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.uint8, name="images")])
    def serve_images(images):
        p_dog = _p_dog_any_batch(model, images)
        return _outputs(p_dog, tf.ones_like(p_dog, tf.bool))

    # No archive.track(model): the archive keeps the variables the endpoints use anyway,
    # and tracking the model as well stored every weight twice (Keras 3.15: once as the
    # Keras variable, once as the tf.Variable the functions capture), doubling the size.
    archive = keras.export.ExportArchive()
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes)
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images)
    archive.write_out(path, verbose=False)


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


def tflite_model(
    model: keras.Model, quantization: str, calibration: np.ndarray | None = None
) -> bytes:
    """The TFLite flatbuffer of ``model``: uint8 images [N, H, W, 3] -> P(dog) float32 [N].

    Args:
      model: The Keras model.
      quantization: "float16" (weights stored as float16, computed in float32 on a CPU) or
        "int8" (weights and activations int8, ranges from ``calibration``).
      calibration: uint8 images at the model's input size; required for "int8".

    Raises:
      ValueError: Unknown quantization, or "int8" without calibration images.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: expected one of {QUANTIZATIONS}")
    image_size = image_size_of(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.uint8, name="images")])
    def p_dog(images):
        return {"p_dog": _p_dog(model, images)}

    # Through a SavedModel, as Keras' own LiteRT export does: a concrete function of a
    # Keras 3 model keeps its weights as resource variables (READ_VARIABLE ops that fail at
    # calibration), while the SavedModel converter freezes them into constants.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", p_dog)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        return _convert(converter, quantization, calibration)


def _convert(converter, quantization: str, calibration: np.ndarray | None) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    else:
        if calibration is None or not len(calibration):
            raise ValueError("int8 quantization needs calibration images (training records)")

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None]]

        converter.representative_dataset = representative
        # int8 kernels wherever one exists, float where none does (listed in metadata.json
        # as float_ops), rather than failing the conversion.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    return converter.convert()


def tflite_interpreter(model_content: bytes, num_threads: int | None = None):
    """A TFLite interpreter for a flatbuffer.

    LiteRT's (``ai_edge_litert``) where it is installed, else ``tf.lite.Interpreter``: TF
    2.21 still ships it, with a warning that it is deprecated in favour of LiteRT, and
    adding LiteRT as a dependency only for the tests and the benchmark is not worth it yet.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter(model_content=model_content, num_threads=num_threads)


def tflite_p_dog(interpreter, images: np.ndarray) -> np.ndarray:
    """P(dog) of uint8 images [N, H, W, 3], one image per invocation (as on a phone)."""
    runner = interpreter.get_signature_runner()
    return np.array([float(runner(images=image[None])["p_dog"][0]) for image in images])


# Ops that only convert between the model's input/output types and its compute type.
_CONVERSION_OPS = frozenset({"CAST", "QUANTIZE", "DEQUANTIZE"})


def tflite_ops(model_content: bytes) -> dict[str, list[str]]:
    """The model's op types: conversions, those computing on integers, those left in float.

    An op (other than a conversion) computes in float when any of its inputs is a float
    tensor, weights included: in the int8 model those are the ops without an int8
    kernel, which the converter leaves in float32 rather than failing.
    """
    interpreter = tflite_interpreter(model_content)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    kinds = {"conversion_ops": set(), "integer_ops": set(), "float_ops": set()}
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op listing TF offers
        name = op["op_name"]
        dtypes = [details[i]["dtype"] for i in op["inputs"] if i >= 0]
        if name in _CONVERSION_OPS:
            kind = "conversion_ops"
        elif any(np.issubdtype(d, np.floating) for d in dtypes):
            kind = "float_ops"
        else:
            kind = "integer_ops"
        kinds[kind].add(name)
    return {kind: sorted(names) for kind, names in kinds.items()}


def _files(folder: str) -> Iterable[str]:
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            yield os.path.join(root, name)


@dataclasses.dataclass(frozen=True)
class Source:
    """What is known about the model being exported, from the files beside it.

    Attributes:
      metrics: ``metrics.json`` beside the model ({} when there is none).
      manifest: The training records' manifest (None when they cannot be found).
      records_settings: How the training records stored the images.
    """

    metrics: dict
    manifest: Manifest | None
    records_settings: dict


def read_source(model_path: str, records_dir: str | None) -> Source:
    """Reads ``metrics.json`` beside the model and the training records' manifest.

    The records are ``records_dir`` when given, else the ``records_dir`` that ``train``
    wrote into ``metrics.json`` (as ``predict`` finds them).

    Raises:
      FileNotFoundError: ``records_dir`` was given and has no manifest.
      ValueError: ``metrics.json`` is not valid JSON.
    """
    from trainer import fit  # Only for the file name; fit imports pandas and matplotlib.

    metrics_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), fit.METRICS_NAME)
    metrics = {}
    if os.path.isfile(metrics_path):
        try:
            with open(metrics_path, encoding="utf-8") as f:
                metrics = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{metrics_path} is not valid JSON ({e})") from e
    manifest = None
    if records_dir:
        manifest = Manifest.load(records_dir)
    else:
        trained_on = (metrics.get("settings") or {}).get("records_dir")
        if trained_on:
            try:
                manifest = Manifest.load(trained_on)
            except FileNotFoundError:
                logging.warning("the training records %s are gone", trained_on)
    settings = (manifest.data.get("settings") if manifest else None) or metrics.get(
        "records_settings"
    )
    return Source(metrics=metrics, manifest=manifest, records_settings=settings or {})


def _val_accuracy(model_path: str, metrics: dict) -> float | None:
    # train writes model.keras (the final weights) and best.keras (the best epoch's).
    key = "best_val_accuracy" if os.path.basename(model_path) == "best.keras" else None
    return metrics.get(key or "final_val_accuracy")


def export(
    model_path: str,
    output_dir: str,
    records_dir: str | None = None,
    calibration_images: int = 200,
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
      ValueError: Not a loadable model.
    """
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"--output_dir={output_dir} already exists; pass --overwrite to replace it, or "
            "choose another --output_dir"
        )
    model = model_lib.load_model(model_path)
    source = read_source(model_path, records_dir)
    if source.manifest is None:
        raise FileNotFoundError(
            f"cannot find the training records of {model_path} (no metrics.json beside it "
            "naming a records_dir that exists): pass --records_dir=<the records it was "
            "trained on>; the int8 model is calibrated on their training images"
        )
    image_size = image_size_of(model)
    calibration = representative_images(source.manifest, image_size, calibration_images)
    logging.info("calibration: %d training images from %s", len(calibration), source.manifest.path)
    keras_p_dog = _in_batches(lambda images: _p_dog(model, images), calibration)

    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        saved_model_path = os.path.join(staging, SAVED_MODEL_DIR)
        write_saved_model(
            model,
            saved_model_path,
            source.records_settings.get("max_short_side"),
            int(source.records_settings.get("jpeg_quality", 90)),
        )
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
            content = tflite_model(model, quantization, calibration)
            with open(os.path.join(staging, tflite_name(quantization)), "wb") as f:
                f.write(content)
            ops[quantization] = tflite_ops(content)
            agreement[quantization] = _agreement(
                keras_p_dog, tflite_p_dog(tflite_interpreter(content), calibration)
            )
            logging.info(
                "wrote %s: %d bytes; ops left in float: %s; max |dP(dog)| vs Keras %.4f",
                tflite_name(quantization),
                len(content),
                ", ".join(ops[quantization]["float_ops"]) or "none",
                agreement[quantization]["max_abs_diff_p_dog"],
            )
        metadata = _metadata(model_path, model, source, calibration, agreement, ops)
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
        "same_class": float(np.mean((p_dog > 0.5) == (reference > 0.5))),
    }


def _metadata(model_path, model, source: Source, calibration, agreement, ops) -> dict:
    height, width = image_size_of(model)
    settings = source.metrics.get("settings") or {}
    return {
        "source_model": {
            "path": os.path.abspath(model_path),
            "sha256": sha256_file(model_path),
            "backbone": settings.get("backbone"),
            "val_accuracy": _val_accuracy(model_path, source.metrics),
            "final_val_accuracy": source.metrics.get("final_val_accuracy"),
            "best_val_accuracy": source.metrics.get("best_val_accuracy"),
        },
        "input": {
            "height": height,
            "width": width,
            "channels": 3,
            "pixels": "RGB uint8 0..255, the whole image resized to height x width (aspect "
            "ratio not kept), as pipeline.decode.decode_and_resize does",
        },
        "labels": list(schema.CLASS_NAMES),
        "records_dir": source.manifest.records_dir if source.manifest else None,
        "records_settings": source.records_settings,
        "signatures": {
            BYTES_SIGNATURE: {
                "inputs": {
                    "image_bytes": "string [N]: complete JPEG files; larger than the records' "
                    "max_short_side, they are first shrunk and re-encoded as make_records "
                    "stores them (Lanczos, jpeg_quality), in the graph"
                },
                "prepare_like_records": {
                    "max_short_side": source.records_settings.get("max_short_side"),
                    "jpeg_quality": int(source.records_settings.get("jpeg_quality", 90)),
                },
                "outputs": {
                    "p_dog": "float32 [N]; NaN where valid is false",
                    "class_id": "int32 [N]: index into labels; -1 where valid is false",
                    "class_name": "string [N]; empty where valid is false",
                    "valid": "bool [N]: false for bytes that are not a complete JPEG",
                },
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
                **ops[q],
            }
            for q in QUANTIZATIONS
        },
        "calibration": {"split": "train", "images": int(len(calibration))},
        "agreement_with_keras_on_calibration_images": agreement,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
