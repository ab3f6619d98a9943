"""records: labelled JPEGs -> sharded TFRecords with a manifest (the `make_records` command)."""

from core import tensorflow_logs as _tensorflow_logs

# Before anything here imports TensorFlow: no C++ INFO/WARNING lines unless asked for.
_tensorflow_logs.install()
