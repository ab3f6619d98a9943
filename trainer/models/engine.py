"""What runs a frozen network over many images: Keras, or LiteRT's XNNPACK kernels.

Every pass that runs a network without training it (the features pass, the audit's base
pass, ``evaluate``, ``predict``) asks ``runner`` for a batch function. ``keras`` is
``model.predict_on_batch``. ``litert`` converts the model once to a float32 TFLite
flatbuffer (no quantization: the same numbers within float32 round-off), caches it in a
folder the caller names (beside the model or the records), keyed by a hash of the
model's architecture, weights and input shape, and runs it with LiteRT's XNNPACK
delegate on every core. On this 2-core CPU XNNPACK ran Lite0's network alone 1.55x
faster than TensorFlow's kernels; a whole pass gained 0.9-2.5x depending on the load
(docs/limits.md).

``auto`` takes ``litert`` when the saving pays for the conversion (a cached flatbuffer
costs nothing to convert; otherwise from the number of images), else ``keras``. A model
LiteRT cannot convert or run falls back to ``keras`` with one log line saying why.

Lives in ``trainer/models/`` (the bottom of ``trainer/``) because training, inference and
the audit all use it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from ai_edge_litert.interpreter import Interpreter

from core import files, tensorflow_logs

# The --engine choices (ENGINES[0] is the default).
ENGINES: tuple[str, ...] = ("auto", "keras", "litert")
# predict's choices add int8 (``trainer.inference.prediction.int8_runner``): an accuracy cost
# (docs/serving.md) that only a user may choose, never auto.
INT8 = "litert_int8"
PREDICT_ENGINES: tuple[str, ...] = (*ENGINES, INT8)

# auto converts only for at least this many images. Measured (docs/limits.md): converting
# Lite0 at 224 px takes ~5 s. LiteRT's features pass ran 1.5-2.5x Keras' images/s when
# another job shared the 2 cores (Keras halves then; LiteRT barely moves), saving ~4 ms
# an image, so the conversion pays from ~1,300 images. On a quiet machine it gained only
# 0.9-1.15x, and there auto can lose the conversion's seconds: an open item.
AUTO_MIN_IMAGES = 3000

# Images per LiteRT invocation (see LiteRTRunner).
CHUNK = 4

# Bumped when the flatbuffer's contents change for the same model (its input or outputs):
# an old cached file is then never picked up.
_FORMAT = "float32-in-v1"


class KerasRunner:
    """``model.predict_on_batch``: TensorFlow's own CPU kernels."""

    engine = "keras"

    def __init__(self, model: keras.Model):
        self._model = model

    def predict_on_batch(self, images) -> np.ndarray:
        return np.asarray(self._model.predict_on_batch(images))


class LiteRTRunner:
    """A TFLite flatbuffer run by LiteRT, XNNPACK on ``num_threads`` cores.

    Takes what the Keras model takes (raw RGB 0..255 [B, H, W, 3], any dtype), any B.
    The interpreter runs a fixed ``chunk`` images per invocation, the last chunk
    padded with black images whose outputs are dropped: one shape, so XNNPACK plans its
    buffers once, and a chunk's activations stay in cache (Lite0 at 224 px: chunks of 4
    the fastest of 1/4/16/64 in both runs, 1.5x batches of 64 under load; docs/limits.md). Every layer of an
    inference-mode network treats each image on its own, so padding changes no output.
    """

    engine = "litert"

    def __init__(self, content: bytes, num_threads: int | None = None, chunk: int = CHUNK):
        self._chunk = chunk
        self._interpreter = Interpreter(
            model_content=content, num_threads=num_threads or os.cpu_count() or 1
        )
        details = self._interpreter.get_input_details()[0]
        self._input, self._dtype = details["index"], details["dtype"]
        self._shape = (chunk, *details["shape"][1:])
        self._interpreter.resize_tensor_input(self._input, self._shape)
        self._interpreter.allocate_tensors()
        self._output = self._interpreter.get_output_details()[0]["index"]

    def predict_on_batch(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != self._dtype:
            images = images.astype(self._dtype)  # uint8 batches -> float32: exact
        outputs = []
        for start in range(0, len(images), self._chunk):
            chunk = images[start : start + self._chunk]
            if len(chunk) < self._chunk:
                chunk = np.concatenate(
                    [chunk, np.zeros((self._chunk - len(chunk), *chunk.shape[1:]), self._dtype)]
                )
            self._interpreter.set_tensor(self._input, chunk)
            self._interpreter.invoke()
            # A copy: the interpreter reuses its output buffer on the next call.
            outputs.append(np.array(self._interpreter.get_tensor(self._output)))
        if not outputs:  # an empty batch: an empty answer
            return np.zeros((0, *self._interpreter.get_tensor(self._output).shape[1:]), np.float32)
        return np.concatenate(outputs)[: len(images)]


Runner = KerasRunner | LiteRTRunner


def check_engine(engine: str, allowed: tuple[str, ...] = ENGINES) -> None:
    """Raises ``ValueError`` naming the choices unless ``engine`` is one of ``allowed``."""
    if engine not in allowed:
        raise ValueError(f"engine={engine!r}: expected one of {', '.join(allowed)}")


def model_key(model: keras.Model, extra: str = "") -> str:
    """sha256 of what the flatbuffer is a function of: architecture, weights, input shape,
    and ``extra`` (what else it depends on, such as int8's calibration images)."""
    digest = hashlib.sha256()
    digest.update(f"{_FORMAT} tf {tf.__version__} {model.input_shape} {extra}".encode())
    digest.update(model.to_json().encode())
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path} {value.dtype} {value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_path(model: keras.Model, cache_dir: str, kind: str = "float32", extra: str = "") -> str:
    """Where ``model``'s ``kind`` flatbuffer is cached in ``cache_dir``."""
    return os.path.join(cache_dir, f"litert_{kind}_{model_key(model, extra)[:24]}.tflite")


def flatbuffer(
    model: keras.Model,
    endpoint: Callable,
    configure: Callable[[tf.lite.TFLiteConverter], None] | None = None,
) -> bytes:
    """The TFLite flatbuffer of ``endpoint`` (a ``tf.function`` with an input signature
    that calls ``model``), after ``configure(converter)`` (quantization, ops).

    Through a SavedModel, as Keras' own LiteRT export does: a concrete function of a Keras 3
    model keeps its weights as resource variables (READ_VARIABLE ops that fail at int8
    calibration), while the SavedModel converter freezes them into constants.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", endpoint)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if configure is not None:
            configure(converter)
        return converter.convert()


def float32_flatbuffer(model: keras.Model) -> bytes:
    """``model`` as float32 TFLite: float32 images [N, H, W, 3] -> its output, unquantized.

    float32 in, not uint8: the training pipeline's augmented views (the cached bottom) are
    not whole numbers, and the copy costs ~1% of Lite0's time per image.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])
    def outputs(images):
        return {"outputs": model(images, training=False)}

    return flatbuffer(model, outputs)


def cached_flatbuffer(
    model: keras.Model,
    cache_dir: str | None,
    convert: Callable[[], bytes] | None = None,
    kind: str = "float32",
    extra: str = "",
) -> bytes:
    """``convert()``'s flatbuffer of ``model`` (default: ``float32_flatbuffer``), read from
    ``cache_dir`` when an earlier run wrote it there (``cache_path``), else converted and
    written there. ``cache_dir`` None: converted every time.
    """
    path = cache_path(model, cache_dir, kind, extra) if cache_dir else None
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    start = time.perf_counter()
    content = convert() if convert else float32_flatbuffer(model)
    logging.info(
        "engine: converted %s to %s TFLite in %.1f s%s",
        model.name,
        kind,
        time.perf_counter() - start,
        f" (cached as {path})" if path else "",
    )
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        # per_process: two commands may convert the same model at once; each renames its
        # own whole file.
        with files.atomic_write(path, ".tflite", per_process=True) as temporary:
            with open(temporary, "wb") as f:
                f.write(content)
    return content


def _reason(error: Exception) -> str:
    """One line from a converter error: the ops it lacks (``Custom ops: BesselI1e``) when it
    names them, else its first line; the MLIR dump that follows helps no user."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    missing = [line for line in lines if line.startswith(("Custom ops:", "Flex ops:"))]
    return "; ".join(missing or lines[:1])[:300] or type(error).__name__


def choose(engine: str, model: keras.Model, num_images: int, cache_dir: str | None) -> str:
    """``engine`` with ``auto`` resolved to ``keras`` or ``litert`` for this work.

    Raises:
      ValueError: Unknown engine.
    """
    check_engine(engine)
    if engine != "auto":
        return engine
    if tf.config.list_physical_devices("GPU"):
        return "keras"  # XNNPACK is a CPU library; a GPU runs Keras faster.
    cached = bool(cache_dir) and os.path.isfile(cache_path(model, cache_dir))
    # A cached flatbuffer costs only its load; a new one pays off only over many images.
    return "litert" if cached or num_images >= AUTO_MIN_IMAGES else "keras"


def runner(
    model: keras.Model,
    engine: str,
    num_images: int,
    cache_dir: str | None = None,
    num_threads: int | None = None,
) -> Runner:
    """A batch function (``predict_on_batch``) running ``model`` on ``engine``.

    Args:
      model: The frozen network, taking raw RGB [B, H, W, 3].
      engine: One of ``ENGINES``.
      num_images: How many images it will see (``auto``'s choice).
      cache_dir: Where the converted flatbuffer is kept (None: converted every time).
      num_threads: LiteRT's threads (default: one per core).

    Returns:
      A ``KerasRunner`` or a ``LiteRTRunner``; its ``engine`` says which.

    Raises:
      ValueError: Unknown engine.
    """
    chosen = choose(engine, model, num_images, cache_dir)
    logging.info("engine: %s for %d images (--engine=%s)", chosen, num_images, engine)
    if chosen == "keras":
        return KerasRunner(model)
    try:
        # The converter prints its MLIR errors to fd 2 (a dozen lines per unsupported op)
        # and raises them again: the fallback below says why in one line instead.
        with tensorflow_logs.filtered_stderr(drop_if_failed=True):
            lite = LiteRTRunner(cached_flatbuffer(model, cache_dir), num_threads)
            # A graph the converter accepted may still hold an op the interpreter cannot
            # prepare: find out now, on one image, rather than mid-pass.
            lite.predict_on_batch(np.zeros((1, *model.input_shape[1:]), np.float32))
    except Exception as e:  # noqa: BLE001 - any failure to convert or run means Keras
        # The converter raises ConverterError, ValueError, RuntimeError or its own
        # absl-logged errors depending on the layer: none of them is worth stopping for.
        logging.warning(
            "engine: %s cannot run on LiteRT, using keras instead: %s",
            model.name,
            _reason(e),
        )
        return KerasRunner(model)
    return lite
