"""Tests for trainer/training/precision.py."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from trainer.training import precision


def test_auto_is_float32_without_gpus():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert precision.choose_policy("auto") == "float32"


def test_mixed_policy_model_computes_in_half_precision_with_a_float32_output():
    # What the policy is for: the trainer's model computes in float16 but its softmax
    # (and so the loss) stays float32.
    from trainer.models import model as model_lib

    try:
        precision.apply_policy(precision.choose_policy("mixed_float16"))
        model = model_lib.build_model(
            model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8)
        )
        assert model.get_layer("dense").compute_dtype == "float16"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.predict_on_batch(tf.zeros([1, 32, 32, 3], tf.uint8)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unknown_policy():
    with pytest.raises(ValueError, match="--mixed_precision=float16: expected one of"):
        precision.choose_policy("float16")


def test_apply_sets_global_policy():
    try:
        precision.apply_policy("mixed_bfloat16")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
