"""Photo files -> the model's input: the one chain every prediction path runs.

``records.photo.prepare`` (how ``make_records`` stores a photo: format by content, size
check, EXIF orientation, 8-bit RGB, shrink to the records' short side, JPEG), then
``pipeline.decode.decode_and_resize`` with the records' DCT cap (how ``eval_dataset``
decodes a record). So a photo sent to ``predict``, to the SavedModel or to the TFLite
helper becomes the pixels ``evaluate`` scores for its record, bit for bit.

``photo_input`` is one photo (for a tf.data map). A batch of raw files follows the rule
of ``records.photo_batches``: a photo the decoder refuses fails only itself, marked
``photo_header.CORRUPT``. ``photo_input_function`` is the traced batch call that
``predict`` runs through ``records.photo_batches.run`` (Python: threads, and a failed
batch run again one photo per call). ``photo_batch`` is the graph form of the same rule,
for the SavedModel, which has no Python: each row is prepared in an in-graph tf.data
pipeline whose ``ignore_errors`` drops only the row the decoder refuses. Both are plain
TensorFlow ops (no ``py_function``): the SavedModel's bytes signature is ``photo_batch``
traced into its graph.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tensorflow as tf

from pipeline import decode
from records import photo, photo_header
from records.photo import StoreSettings


def photo_input(
    data: tf.Tensor, settings: StoreSettings, image_size: Sequence[int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """One photo file's bytes -> (uint8 [H, W, 3] as validation decodes it, status int32).

    Rows whose status is not ``photo_header.OK`` come back as zeros. Damaged data that passes
    the checks makes the op fail (as in ``make_records``); see ``photo_batch``.
    """
    image_size = decode.size_pair(image_size)
    # validate=False: decode_and_resize decodes the stored bytes anyway, and fails on
    # the same damaged data make_records' validating decode fails on.
    fields = photo.prepare(data, settings, validate=False)
    max_ratio = decode.max_useful_ratio(settings.max_short_side, image_size)
    image = tf.cond(
        tf.equal(fields["status"], photo_header.OK),
        lambda: decode.decode_and_resize(
            fields["encoded"],
            image_size,
            fields["stored_height"],
            fields["stored_width"],
            max_ratio,
        ),
        lambda: tf.zeros([*image_size, 3], tf.uint8),
    )
    return image, fields["status"]


def photo_batch(
    image_bytes: tf.Tensor, settings: StoreSettings, image_size: Sequence[int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Photo files [N] -> (uint8 images [N, H, W, 3], status int32 [N]); never fails on a row.

    The graph form of ``records.photo_batches.run``: a row the decoder refuses gets
    ``photo_header.CORRUPT`` (no words: a graph has only the status) and zeros; rows are
    prepared in parallel. An empty batch gives empty outputs.
    """
    height, width = decode.size_pair(image_size)
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    rows = (
        tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
        .map(
            lambda index, data: (index, *photo_input(data, settings, (height, width))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .ignore_errors()
    )
    # One sentinel row keeps the batch non-empty (get_single_element needs an element).
    sentinel = tf.data.Dataset.from_tensors(
        (tf.constant(-1, tf.int64), tf.zeros([height, width, 3], tf.uint8), tf.constant(0))
    )
    index, images, status = rows.concatenate(sentinel).batch(count + 1).get_single_element()
    kept = tf.where(index >= 0)
    positions = tf.gather_nd(index, kept)[:, None]
    images = tf.scatter_nd(positions, tf.gather_nd(images, kept), [count, height, width, 3])
    # Rows missing from the batch were dropped by ignore_errors: damaged data.
    missing = tf.fill([count], tf.constant(photo_header.CORRUPT, tf.int32))
    status = tf.tensor_scatter_nd_update(missing, positions, tf.gather_nd(status, kept))
    return images, status


@functools.lru_cache(maxsize=16)
def photo_input_function(settings: StoreSettings, image_size: tuple[int, int]):
    """``photo_input`` over a batch of photo files [N] in one traced call (``tf.map_fn``):
    (uint8 images [N, H, W, 3], status [N]).

    For callers that run many photos from Python threads (``predict``): one call per
    batch, several photos at once on TensorFlow's threads. Unlike ``photo_batch``, a photo
    the decoder refuses fails the whole call: run it through ``records.photo_batches.run``,
    which runs that batch again one photo per call. ``photo_batch`` in its place (one
    in-graph tf.data pipeline per call) gave 96 images/s against ~750 (500 sample photos,
    160-px records, 128 px, 2 threads, load ~8).
    """
    height, width = image_size
    return tf.function(
        lambda data: tf.map_fn(
            lambda one: photo_input(one, settings, (height, width)),
            data,
            fn_output_signature=(
                tf.TensorSpec([height, width, 3], tf.uint8),
                tf.TensorSpec([], tf.int32),
            ),
            parallel_iterations=8,
        ),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,  # tf.cond throughout: tracing without source conversion is faster
    )
