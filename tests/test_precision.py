"""Tests for trainer/precision.py."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from trainer import precision


def test_auto_is_float32_without_gpus():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert precision.choose_policy("auto") == "float32"


@pytest.mark.parametrize("name", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_explicit_policies_pass_through(name):
    assert precision.choose_policy(name) == name


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
