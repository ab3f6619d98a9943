"""The approaches the pipeline replaces, each as fast as it honestly goes.

* Keras' legacy ``ImageDataGenerator.flow_from_dataframe`` (the seed's loader) with its
  rotation/shift/shear/zoom/flip, read on one thread (the seed's default) and through
  Keras' own worker threads (``PyDataset`` ``workers=``, the ``OrderedEnqueuer`` that
  ``model.fit`` uses);
* ``keras.utils.image_dataset_from_directory`` (no augmentation);
* the full-resolution decode ceiling: ``tf.io.decode_jpeg`` of the original bytes held
  in memory, all cores, nothing else, with libjpeg's default IDCT and with the fastest
  one (``INTEGER_FAST``, the one the pipeline uses).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf
from absl import logging

from benchmarks.timing import MakeIterator
from records import schema

# The legacy generator's affine augmentation, as the seed configured it.
_AFFINE = {
    "rotation_range": 15,
    "width_shift_range": 0.1,
    "height_shift_range": 0.1,
    "shear_range": 0.1,
    "zoom_range": 0.2,
}


def legacy_generator(
    paths: Sequence[pathlib.Path],
    labels: Sequence[int],
    image_size: int,
    batch_size: int,
    workers: int,
) -> tuple[MakeIterator, str] | None:
    """The legacy generator over ``paths``: (iterator factory, note), or None if absent.

    ``workers`` > 1 reads it the way ``model.fit`` does when the ``PyDataset`` has
    ``workers`` set: Keras' ``OrderedEnqueuer`` over a thread pool, batches in order.
    ``flow_from_dataframe`` does not forward ``workers=`` to its ``PyDataset`` base, so
    it is set on the iterator after construction.

    The note says when the figure is not the real baseline (scipy missing: flip only,
    which is faster, so ratios against it are lower bounds).
    """
    try:
        # Keras 3 keeps the generators only in its private legacy module.
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    except ImportError as e:
        logging.warning("skipping the legacy generator: %s", e)
        return None
    import pandas as pd

    frame = pd.DataFrame(
        {"filename": [str(p) for p in paths], "class": [schema.CLASS_NAMES[i] for i in labels]}
    )
    note = ""
    try:
        import scipy.ndimage  # noqa: F401  (the generator's affine transforms need it)

        affine = _AFFINE
    except ImportError:
        logging.warning(
            "scipy is not installed: the legacy generator runs with horizontal flip only "
            "(its rotation/shift/shear/zoom need scipy.ndimage); ratios against it are "
            "lower bounds. `pip install scipy` for the full baseline."
        )
        affine = {}
        note = (
            "flip only: scipy missing, so rotation/shift/shear/zoom were off "
            "(ratios against it are lower bounds)"
        )
    generator = ImageDataGenerator(horizontal_flip=True, **affine)

    def flow():
        return generator.flow_from_dataframe(
            frame,
            x_col="filename",
            y_col="class",
            target_size=(image_size, image_size),
            class_mode="binary",
            batch_size=batch_size,
            shuffle=True,
            seed=0,
            validate_filenames=False,
        )

    def one_thread() -> Iterator[Any]:
        return iter(flow())

    def threaded() -> Iterator[Any]:
        iterator = flow()
        iterator._workers = workers  # noqa: SLF001 - see the docstring
        adapter = PyDatasetAdapter(iterator, shuffle=False)
        try:
            while True:  # epoch after epoch, as fit() would
                adapter.on_epoch_begin()
                yield from adapter.get_numpy_iterator()
                adapter.on_epoch_end()
        finally:
            # Runs on close(): stops the enqueuer's threads.
            if adapter.enqueuer is not None:
                adapter.enqueuer.stop()

    return (threaded if workers > 1 else one_thread), note


def image_dataset_from_directory(
    tree: pathlib.Path, image_size: int, batch_size: int
) -> tf.data.Dataset:
    import keras

    return keras.utils.image_dataset_from_directory(
        tree,
        image_size=(image_size, image_size),
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        verbose=False,
    )


def decode_ceiling(encoded: list[bytes], batch_size: int, dct_method: str) -> tf.data.Dataset:
    """Full-resolution decode of bytes held in memory, all cores, nothing else.

    Args:
      dct_method: "" (libjpeg's default, ISLOW) or "INTEGER_FAST" (the fastest, and the
        pipeline's).
    """

    def decode_only(data):
        image = tf.io.decode_jpeg(data, channels=3, dct_method=dct_method)
        # The shape depends on the decode, so the decode cannot be optimised away.
        return tf.shape(image)

    return (
        tf.data.Dataset.from_tensor_slices(encoded)
        .map(decode_only, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
