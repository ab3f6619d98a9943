"""A trained model -> TFLite flatbuffers, and running them with LiteRT.

The TFLite models take what the Keras model takes: uint8 images [N, H, W, 3] at the
model's input size, and return P(dog) [N]. Turning a photo file into such an image is
``pipeline.photos`` (see ``trainer.serving.tflite_client``, which does both).

The interpreter is LiteRT's (``ai_edge_litert``, pinned beside TensorFlow 2.21), the
successor of ``tf.lite.Interpreter``, which TF 2.21 still ships with a warning that it
will be deleted.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from trainer.models import engine
from trainer.models import model as model_lib
from trainer.serving import saved_model

# TFLite variants: file name and how the converter quantizes them.
QUANTIZATIONS: tuple[str, ...] = ("float16", "int8")


def tflite_name(quantization: str) -> str:
    return f"model_{quantization}.tflite"


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
    image_size = model_lib.input_size(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.uint8, name="images")])
    def p_dog(images):
        return {"p_dog": saved_model.p_dog(model, images)}

    return engine.flatbuffer(
        model, p_dog, lambda converter: _configure(converter, quantization, calibration)
    )


def _configure(converter, quantization: str, calibration: np.ndarray | None) -> None:
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


def interpreter(model_content: bytes, num_threads: int | None = None) -> Interpreter:
    """A LiteRT interpreter for a flatbuffer."""
    return Interpreter(model_content=model_content, num_threads=num_threads)


def p_dog(tflite: Interpreter, images: np.ndarray) -> np.ndarray:
    """P(dog) of uint8 images [N, H, W, 3], one image per invocation (as on a phone)."""
    runner = tflite.get_signature_runner()
    return np.array([float(runner(images=image[None])["p_dog"][0]) for image in images])


# Ops that only convert between the model's input/output types and its compute type.
_CONVERSION_OPS = frozenset({"CAST", "QUANTIZE", "DEQUANTIZE"})


def ops(model_content: bytes) -> dict[str, list[str]]:
    """The model's op types: conversions, those computing on integers, those left in float.

    An op (other than a conversion) computes in float when any of its inputs is a float
    tensor, weights included: in the int8 model those are the ops without an int8
    kernel, which the converter leaves in float32 rather than failing.
    """
    tflite = interpreter(model_content)
    details = {t["index"]: t for t in tflite.get_tensor_details()}
    kinds = {"conversion_ops": set(), "integer_ops": set(), "float_ops": set()}
    for op in tflite._get_ops_details():  # noqa: SLF001 - the only op listing offered
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
