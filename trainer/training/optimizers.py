"""The optimizer and learning-rate schedule of a training phase, by name."""

from __future__ import annotations

import keras

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")
# XLA for the training step, as Keras' compile(jit_compile=...) takes it. "auto" is Keras'
# choice, which is off under any tf.distribute strategy (so always off in `train`).
JIT_COMPILE: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


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
