"""Tests for trainer/inference/tta.py: flip averages the two passes, none is the plain output."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.inference import tta


def _left_half_model(head: str = "softmax") -> keras.Model:
    """P(dog) from the brightness of the image's left half: mirroring changes the answer."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Cropping2D(((0, 0), (0, 8)))(x)  # keep columns 0..7
    x = keras.layers.GlobalAveragePooling2D()(x)
    units = 2 if head == "softmax" else 1
    dense = keras.layers.Dense(units, activation=head)
    model = keras.Model(inputs, dense(x))
    # logit(dog) - logit(cat) = 12 * (brightness - 0.5), brightness in 0..1.
    if units == 2:
        weights, bias = np.array([[-2.0, 2.0]] * 3), np.array([3.0, -3.0])
    else:
        weights, bias = np.full((3, 1), 4.0), np.array([-6.0])
    dense.set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


def _asymmetric_images() -> np.ndarray:
    """Three images whose left and right halves differ in brightness, plus noise."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (3, 16, 16, 3)).astype(np.uint8)
    images[0, :, :8] += 180  # bright left
    images[1, :, 8:] += 180  # bright right
    images[2] += 90  # even
    return images


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_flip_is_the_mean_of_the_image_and_its_mirror(head):
    model = _left_half_model(head)
    images = _asymmetric_images()
    plain = np.asarray(model.predict_on_batch(images))
    mirrored = np.asarray(model.predict_on_batch(images[:, :, ::-1].copy()))
    # The flip matters for these images: the two passes disagree a lot.
    assert np.abs(plain - mirrored).max() > 0.5
    flipped = tta.predict_batch(model, images, "flip")
    assert flipped.shape == plain.shape
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, rtol=0, atol=1e-6)


def test_none_is_exactly_the_plain_output():
    model = _left_half_model()
    images = _asymmetric_images()
    np.testing.assert_array_equal(
        tta.predict_batch(model, images, "none"), np.asarray(model.predict_on_batch(images))
    )
    assert tta.TTA_MODES[0] == "none"


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="tta='rotate': expected one of none, flip"):
        tta.predict_batch(_left_half_model(), _asymmetric_images(), "rotate")
