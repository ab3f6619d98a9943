"""Tests for benchmarks/flops.py: multiply-adds counted from a model's layers."""

from __future__ import annotations

import keras

from benchmarks import flops


def test_multiply_adds_of_conv_depthwise_and_dense_layers_nested_or_not():
    inner_input = keras.Input((8, 8, 8))
    # 3x3 depthwise, multiplier 2, "same" on 8x8x8: 8*8 positions x 9 x 8 x 2.
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inner_input)
    inner = keras.Model(inner_input, depthwise, name="base")
    inputs = keras.Input((16, 16, 3))
    # 3x3 conv, stride 2, 3 -> 8 channels: 8*8 positions x 9 x 3 x 8.
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)  # elementwise: not counted
    x = inner(x)
    # Grouped 1x1 conv, 16 -> 16 in 4 groups: 8*8 x 16/4 x 16.
    x = keras.layers.Conv2D(16, 1, groups=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)  # 16 x 2
    model = keras.Model(inputs, outputs)
    expected = 64 * 9 * 3 * 8 + 64 * 9 * 8 * 2 + 64 * 4 * 16 + 16 * 2
    assert flops.multiply_adds(model) == expected
