"""Choosing and applying the Keras mixed-precision policy, in one place.

Loss scaling needs no code here: Keras 3's `Model.compile` wraps the optimizer in a
`LossScaleOptimizer` itself when the model's dtype policy is mixed_float16
(keras/src/trainers/trainer.py, `compile`); bfloat16 needs no loss scaling.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# float16 tensor cores arrived with Volta (7.0); older GPUs run float16 slower than float32.
_MIN_FP16_COMPUTE_CAPABILITY = (7, 0)


def choose_policy(requested: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """Resolves `requested` ("auto" or a policy name) to a Keras dtype policy name.

    auto: mixed_bfloat16 on TPU; mixed_float16 when every GPU has compute capability
    >= 7.0; float32 otherwise. On a CPU float32 is the faster one even where the CPU has
    AVX-512 BF16: measured on this project's 2-core EPYC (scripts/benchmark_backbones.py,
    EfficientNet-Lite0 at 224 px, same run), mixed_bfloat16 ran the frozen forward pass at
    0.9x float32's images/s and a training step at 0.7x (docs/training.md).

    Raises:
      ValueError: For an unknown policy name.
    """
    if requested not in POLICIES:
        raise ValueError(f"--mixed_precision={requested}: expected one of {', '.join(POLICIES)}")
    if requested != "auto":
        return requested
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and all(_compute_capability(gpu) >= _MIN_FP16_COMPUTE_CAPABILITY for gpu in gpus):
        return "mixed_float16"
    return "float32"


def _compute_capability(gpu: tf.config.PhysicalDevice) -> tuple[int, int]:
    details = tf.config.experimental.get_device_details(gpu)
    return tuple(details.get("compute_capability", (0, 0)))


def apply_policy(name: str) -> str:
    """Sets the global Keras dtype policy (before the model is built) and returns its name."""
    keras.mixed_precision.set_global_policy(name)
    logging.info("Keras dtype policy: %s", name)
    return name
