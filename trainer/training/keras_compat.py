"""Fixes for Keras 3.15's TensorFlow trainer under MultiWorkerMirroredStrategy.

``Model.fit`` with ``tf.distribute.MultiWorkerMirroredStrategy`` and more than one worker
fails in the pinned keras 3.15.1 (TF 2.21) before the first step, for two reasons
(reproduced with a three-layer ``Sequential`` model, so not specific to this project):

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from the first batch and,
   when that batch is distributed, calls ``strategy.reduce("MEAN", batch, axis=None)`` on
   the whole ``(images, labels)`` structure. The collective implementation cannot reduce
   that structure ("Attempt to convert a value (PerReplica...) to a Tensor").
   The build only needs shapes and dtypes, so the first local replica's batch serves.
2. ``reduce_per_replica`` reduces every metric with ``strategy.reduce("MEAN", v, axis=0)``
   under a multi-worker strategy; the metrics are scalars, which have no axis 0.
   A scalar is averaged across the workers with ``axis=None`` instead. Every value is
   reduced, a plain tensor too: with one replica per worker ``strategy.run`` returns each
   worker's own running metrics as a plain tensor (the metric variables are read
   locally inside the step), and leaving those unreduced gave each worker's callbacks
   the loss and accuracy of its own share of the batch only. The epoch-level logs are
   read from the metric variables outside the step and were right either way.

``apply()`` patches both, only when called (``trainer.training.strategy.make_strategy`` calls it for
``--strategy=multi_worker`` alone), and only for the Keras version it was written against:
with any other version it leaves Keras untouched and logs that it did, so an upgrade that
fixes the bugs is not masked, and ``tests/test_multiworker.py`` shows whether it works.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

# The Keras release these fixes were written and tested against.
PATCHED_KERAS_VERSION = "3.15.1"
_applied = False


def _first_local_replica(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Same as Keras' method, but takes the first local replica's batch instead of a
    # cross-worker reduce of the whole batch (fix 1 in the module docstring).
    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(_first_local_replica, next(it))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _make_reduce_per_replica(original):
    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return original(values, strategy, reduction)

        def reduce(value):
            if isinstance(value, tf.distribute.DistributedValues):
                rank = value.values[0].shape.rank
            elif tf.is_tensor(value):
                rank = value.shape.rank  # One local replica: this worker's value only.
            else:
                return value
            # Fix 2: a scalar has no axis 0 to average over.
            return strategy.reduce("MEAN", value, axis=None if rank == 0 else 0)

        return tf.nest.map_structure(reduce, values)

    return reduce_per_replica


def apply() -> bool:
    """Patches Keras' TF trainer for multi-worker ``fit`` (idempotent).

    Returns:
      True if the fixes are in place, False if this Keras version is not the one they
      were written for (then Keras runs unpatched).
    """
    global _applied
    if _applied:
        return True
    if keras.__version__ != PATCHED_KERAS_VERSION:
        logging.warning(
            "keras %s is not %s: multi-worker fixes not applied"
            " (see trainer/training/keras_compat.py)",
            keras.__version__,
            PATCHED_KERAS_VERSION,
        )
        return False
    # Imported here: private module of the pinned version, only touched when patching.
    from keras.src.backend.tensorflow import trainer as tf_trainer

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = _make_reduce_per_replica(tf_trainer.reduce_per_replica)
    _applied = True
    logging.info(
        "applied keras %s multi-worker fixes (trainer/training/keras_compat.py)", keras.__version__
    )
    return True
