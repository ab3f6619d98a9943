"""Benchmarks: tools that measure the pipeline and the trainer, not code a training job imports.

``benchmark_input`` (``benchmarks.benchmark_input``) times input variants against the
approaches they replace; ``benchmark_train`` (``benchmarks.benchmark_train``) sets the
pipeline against the real model's demand. Variants live in one typed registry
(``benchmarks.variants``); timing and reporting are modules of their own.
"""

from core import tensorflow_logs as _tensorflow_logs

# Before anything here imports TensorFlow: no C++ INFO/WARNING lines unless asked for.
_tensorflow_logs.install()
