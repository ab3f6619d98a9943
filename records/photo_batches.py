"""Photo files through a traced batch function, on threads, in order: a bad photo fails only itself.

The one Python definition of "one bad photo must not fail the batch". ``make_records``
(``records.stored_photo.prepare_many``) and ``predict``
(``trainer.inference.prediction.image_dataset``) both run their batch function through
``run``. The exported SavedModel has no Python: its graph form of the same rule is
``pipeline.photos.photo_batch`` (an in-graph ``tf.data`` ``ignore_errors`` that drops the
row, marked ``photo_header.CORRUPT``, "cannot decode").

Why it is needed: TF 2.21's decoders fail the whole call on damaged data that passes the
header checks (JPEG has no checksum, so only decoding finds it). ``photo_header`` refuses
what it can see with a status, so a failed call is rare; the batch is then run again one
photo per call, and only the photo whose call still fails is refused, with the decoder's
words. One by one rather than by halving: with one bad photo among 32, halving runs 62
photos again in 10 calls, one by one 32 photos in 32 calls; a call costs ~0.4 ms of CPU
and a sample photo at 160 px ~0.8 ms (one intra-op thread, load ~6.6), so ~54 ms against
~38 ms, and halving gets dearer with each further bad photo.

Why batches on threads: graph ops release the GIL, so the threads decode and resize in
parallel, and Python is paid per batch, not per photo (docs/converting.md).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tensorflow as tf

from records import photo_header

# Photos per traced call (a few MB of bytes in flight per thread).
BATCH = 32
# What a decoder raises on damaged data (jpeg::Uncompress, PNG's zlib ...).
DECODER_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnknownError)


class BadImage(ValueError):
    """The bytes cannot become a stored image or model input; ``str(e)`` is the reason.

    The words of a manifest's ``skipped`` and predict's ``bad_images.json``.
    """


@dataclasses.dataclass(frozen=True)
class Row:
    """What became of one item, in input order.

    Attributes:
      item: The item, as given.
      data: Its bytes; None when it could not be read.
      outputs: The batch function's outputs for this photo alone (numpy, without the batch
        axis; a dict or tuple if the function's are); None when refused.
      reason: Why it got no outputs (unreadable, refused by ``read``, or by the decoder);
        None otherwise.
    """

    item: Any
    data: bytes | None
    outputs: Any = None
    reason: str | None = None


def decoder_words(data: bytes, error: tf.errors.OpError) -> str:
    """The reason for bytes the decoder refused: ``corrupt JPEG (<the decoder's message>)``."""
    # "{{function_node __inference_...}} jpeg::Uncompress failed. ... [[{{node ...}}]]"
    text = re.sub(r"\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]", "", error.message)
    words = " ".join(text.split()).strip(" .") or type(error).__name__
    return f"corrupt {photo_header.format_name(data)} ({words})"


def run(
    function: Callable[[tf.Tensor], Any],
    items: Iterable,
    read: Callable[[Any], bytes],
    num_threads: int,
    batch_size: int = BATCH,
) -> Iterator[Row]:
    """``function`` over the photos of ``items``, ``batch_size`` per call, one ``Row`` each, in order.

    Args:
      function: Photo files (string [N]) -> a tensor [N, ...], or a dict or tuple of
        them: a traced batch function (``records.photo.prepare_batch_function``,
        ``pipeline.photos.photo_input_function``).
      items: What to run, in order; read lazily, at most ``4 * num_threads`` batches in
        flight.
      read: ``item -> bytes``, called on the threads; raising ``BadImage`` refuses the item
        with its words, ``OSError`` as ``unreadable: ...``.
      num_threads: Batches run at once.
      batch_size: Photos per call.

    Yields:
      One ``Row`` per item: the function's outputs for that photo, or why it has none. A
      photo whose call fails with a decoder error gets ``decoder_words``; the other photos
      of its batch are unaffected.
    """

    def run_batch(batch: list) -> list[Row]:
        rows: list[Row | None] = [None] * len(batch)
        datas, where = [], []
        for position, item in enumerate(batch):
            try:
                datas.append(read(item))
                where.append(position)
            except BadImage as e:
                rows[position] = Row(item, None, reason=str(e))
            except OSError as e:
                rows[position] = Row(item, None, reason=f"unreadable: {e}")
        try:
            outputs = _call(function, datas)
        except DECODER_ERRORS:
            outputs = [_alone(function, data) for data in datas]
        for position, data, output in zip(where, datas, outputs):
            if isinstance(output, tf.errors.OpError):
                rows[position] = Row(batch[position], data, reason=decoder_words(data, output))
            else:
                rows[position] = Row(batch[position], data, outputs=output)
        return rows

    for rows in _ordered_map(run_batch, _batches(items, batch_size), num_threads):
        yield from rows


def _call(function: Callable, datas: list[bytes]) -> list:
    """``function`` over ``datas`` in one call, split into one output per photo."""
    if not datas:
        return []
    outputs = function(tf.constant(datas, tf.string))
    # zip, not tf.nest.map_structure: ~2 us a photo instead of ~24 (13 fields), which is
    # ~7% of a full-size photo's 0.33 ms of CPU in make_records.
    if isinstance(outputs, tf.Tensor):
        return list(outputs.numpy())
    if isinstance(outputs, dict):
        keys = list(outputs)
        return [dict(zip(keys, row)) for row in zip(*(outputs[key].numpy() for key in keys))]
    return list(zip(*(value.numpy() for value in outputs)))


def _alone(function: Callable, data: bytes):
    """One photo's outputs, or the decoder's error for it."""
    try:
        return _call(function, [data])[0]
    except DECODER_ERRORS as e:
        return e


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ordered_map(function: Callable, items: Iterable, num_threads: int) -> Iterator:
    """``map(function, items)`` on a thread pool, in order, with a bounded number in flight
    (memory stays flat however many items there are)."""
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 4 * num_threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
