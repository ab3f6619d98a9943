"""A network's multiply-adds per image, counted from its layers, and the CPU's matmul peak.

The two halves of "how close is a pass to what this CPU can do": GFLOP/s of a pass is
2 x multiply-adds per image x images/s, and the peak is what a large dense float32 matmul
reaches on the same cores in the same run.

Counted: ``Conv2D`` (H_out x W_out x k_h x k_w x C_in / groups x C_out), ``DepthwiseConv2D``
(H_out x W_out x k_h x k_w x C_in x multiplier) and ``Dense`` (inputs x units per output
row). Not counted: batch norm, activations, additions, pooling and the preprocessing
(elementwise work, ~1-2% of Lite0's arithmetic), so the GFLOP/s are a slight
under-count.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np


def _layers(model: keras.Model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _layers(layer)  # a nested model (the base)
        else:
            yield layer


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image through ``model`` (see the module docstring)."""
    total = 0
    for layer in _layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        kernel_shape = tuple(kernel.shape)
        output = tuple(layer.output.shape[1:])  # per image
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            height, width = output[:2]
            total += height * width * math.prod(kernel_shape)
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = output[:2]
            total += height * width * math.prod(kernel_shape)  # C_in / groups in the kernel
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(output[:-1]) * math.prod(kernel_shape)
    return total


def matmul_peak_gflops(size: int = 4096, repeats: int = 3) -> dict[str, float]:
    """The best GFLOP/s of ``repeats`` float32 [size, size] matmuls, on every core, by numpy
    (its BLAS) and by TensorFlow (oneDNN): the practical peak a network's kernels are
    measured against. Both, because they differ: on this CPU TensorFlow's ran ~2x numpy's.
    """
    import tensorflow as tf  # only here: the multiply-add count needs no TensorFlow

    rng = np.random.default_rng(0)
    a = rng.random((size, size), np.float32)
    b = rng.random((size, size), np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    runs = {"numpy": lambda: a @ b, "tensorflow": lambda: (ta @ tb).numpy()}
    best = {}
    for library, run in runs.items():
        run()  # warm-up: thread pool start, pages touched
        seconds = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds = min(seconds, time.perf_counter() - start)
        best[library] = round(2 * size**3 / seconds / 1e9, 1)
    return best
