"""The optimizer and learning-rate schedule of a training phase, by name."""

from __future__ import annotations

import keras

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")
# XLA for the training step, as Keras' compile(jit_compile=...) takes it. "auto" is Keras'
# choice, which is off under any tf.distribute strategy (so always off in `train`).
JIT_COMPILE: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "warmup_cosine")
# warmup_cosine: the rate rises linearly from 0 over this share of the steps, then decays
# as a cosine; a fine-tune starting from a trained head so does not kick the pretrained
# weights with the full rate while Adam's moment estimates are still empty.
WARMUP_SHARE = 0.1


def make_optimizer(
    name: str, learning_rate: float, momentum: float, schedule: str, total_steps: int
) -> keras.optimizers.Optimizer:
    """``name``'s optimizer at ``learning_rate``: constant, cosine-decayed over ``total_steps``,
    or the same after a linear warm-up (``WARMUP_SHARE`` of the steps).

    Raises:
      ValueError: For an unknown optimizer or schedule.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    total_steps = max(1, total_steps)
    rate = learning_rate
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    elif schedule == "warmup_cosine":
        warmup = max(1, round(WARMUP_SHARE * total_steps))
        rate = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(1, total_steps - warmup),
            warmup_target=learning_rate,
            warmup_steps=warmup,
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
