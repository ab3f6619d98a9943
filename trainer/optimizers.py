"""The optimizer and learning-rate schedule of a training phase, by name."""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer import backbones

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")
# XLA for the training step, as Keras' compile(jit_compile=...) takes it. "auto" is resolved
# by ``jit_compile``.
JIT_COMPILE: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def jit_compile(setting: str, backbone: str) -> bool | str:
    """``--jit_compile`` as ``compile(jit_compile=...)`` takes it.

    "auto" on a host without GPU or TPU is the backbone's measured CPU choice
    (``Backbone.cpu_jit_compile``): XLA makes small_cnn ~1.7x faster on 2 cores but
    EfficientNet-Lite0's depthwise convolutions several times slower, so no one answer
    fits every backbone. With an accelerator it stays Keras' "auto" (off under a
    tf.distribute strategy): not measured here.
    """
    if setting != "auto":
        return JIT_COMPILE[setting]
    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return "auto"
    return backbones.get(backbone).cpu_jit_compile


def make_optimizer(
    name: str, learning_rate: float, momentum: float, schedule: str, total_steps: int
) -> keras.optimizers.Optimizer:
    """``name``'s optimizer at ``learning_rate``, constant or cosine-decayed over ``total_steps``.

    Raises:
      ValueError: For an unknown optimizer or schedule.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    rate = (
        keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps))
        if schedule == "cosine"
        else learning_rate
    )
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    if name == "adamw":
        return keras.optimizers.AdamW(rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    raise ValueError(f"optimizer={name!r}: expected one of {', '.join(OPTIMIZERS)}")
