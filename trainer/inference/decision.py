"""The decision rule: P(dog) -> a class. One definition for evaluate, predict and export.

A photo is a dog when P(dog) > ``THRESHOLD``, else a cat (a tie is a cat). For the
softmax head that is its argmax up to float rounding; for the sigmoid head it is the
usual threshold. Everything that names a class from a probability calls this: the
metrics, the mistakes, predict's table, the demo report and the SavedModel's graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from records.schema import CLASS_NAMES

THRESHOLD = 0.5


def class_id(prob_dog) -> np.ndarray:
    """Index into ``CLASS_NAMES`` (0 cat, 1 dog) of P(dog) values (numpy)."""
    return (np.asarray(prob_dog) > THRESHOLD).astype(np.int64)


def class_id_tensor(prob_dog):
    """``class_id`` as TensorFlow ops (int32), for graphs such as the SavedModel's."""
    return tf.cast(prob_dog > THRESHOLD, tf.int32)


def class_name(prob_dog: float) -> str:
    """The class name of one P(dog)."""
    return CLASS_NAMES[int(class_id(prob_dog))]
