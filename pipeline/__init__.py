"""pipeline: TFRecord shards -> augmented, prefetched (images, labels) batches."""

from core import tensorflow_logs as _tensorflow_logs

# Before anything here imports TensorFlow: no C++ INFO/WARNING lines unless asked for.
_tensorflow_logs.install()
