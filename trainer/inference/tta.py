"""Test-time augmentation: the one place ``evaluate`` and ``predict`` get P(dog) from a batch.

``"none"`` is the plain model output. ``"flip"`` averages the model's class probabilities
over each image and its horizontal mirror: a cat is a cat mirrored, training already
flips (``pipeline.fused``), so the two views are equally likely inputs and their mean
cancels some of the model's left/right noise. It costs a second forward pass per image.
"""

from __future__ import annotations

import numpy as np

# The --tta choices of evaluate and predict (TTA_MODES[0] is the default).
TTA_MODES: tuple[str, ...] = ("none", "flip")


def check_mode(tta: str) -> None:
    """Raises ``ValueError`` naming the choices unless ``tta`` is one of ``TTA_MODES``."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}: expected one of {', '.join(TTA_MODES)}")


def passes(tta: str) -> int:
    """Forward passes per image under ``tta``."""
    return 2 if tta == "flip" else 1


def predict_batch(model, images, tta: str = "none") -> np.ndarray:
    """The model's class probabilities for one batch, with test-time augmentation ``tta``.

    Args:
      model: A Keras model taking uint8-valued RGB images [B, H, W, 3], or anything with
        its ``predict_on_batch`` (``trainer.models.engine.runner``).
      images: The batch (a tensor or an array).
      tta: One of ``TTA_MODES``.

    Returns:
      [B, 2] softmax or [B, 1] sigmoid probabilities, as the model outputs them; with
      ``"flip"`` the mean of the outputs for the images and their mirrors.

    Raises:
      ValueError: For an unknown ``tta``.
    """
    check_mode(tta)
    if tta == "none":
        return np.asarray(model.predict_on_batch(images))
    images = np.asarray(images)
    batch = len(images)
    # One call on [images; mirrors] rather than two: half the per-call overhead, and the
    # model's inference-mode layers (batch norm, dropout) treat each image on its own,
    # so the halves are what two separate calls would give.
    both = np.asarray(model.predict_on_batch(np.concatenate([images, images[:, :, ::-1]])))
    return (both[:batch] + both[batch:]) / 2
