"""Tests for records.photo_batches: one bad photo fails only itself, in order, on threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_damaged_jpeg, make_jpeg_bytes
from pipeline import photos
from records import photo_batches, photo_header
from records.photo import StoreSettings
from records.photo_batches import BadImage


class CountingShapes:
    """A traced batch function (photo files [N] -> decoded shapes [N, 3]) that counts calls."""

    def __init__(self):
        self.calls = 0
        self._function = tf.function(
            lambda data: tf.map_fn(
                lambda one: tf.shape(tf.io.decode_jpeg(one, channels=3)),
                data,
                fn_output_signature=tf.TensorSpec([3], tf.int32),
            ),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )

    def __call__(self, data):
        self.calls += 1
        return self._function(data)


def _read(item):
    name, data = item
    if isinstance(data, Exception):
        raise data
    return data


def test_a_photo_the_decoder_refuses_fails_only_itself_and_order_is_kept():
    # Heights 8, 16, 24 ... tell the good photos apart; one damaged photo in the second
    # batch (of 4), one unreadable and one refused by read in the third (of 3).
    items = [(f"good{i}", make_jpeg_bytes(8 * (i + 1), 8, seed=i)) for i in range(11)]
    items[5] = ("damaged", make_damaged_jpeg())
    items[8] = ("unreadable", OSError(5, "Input/output error"))
    items[9] = ("changed", BadImage("file changed while the conversion ran"))
    function = CountingShapes()
    rows = list(photo_batches.run(function, items, _read, num_threads=2, batch_size=4))

    assert [row.item for row in rows] == items
    good = [i for i in range(11) if i not in (5, 8, 9)]
    for i in good:
        assert rows[i].reason is None
        assert rows[i].outputs.tolist() == [8 * (i + 1), 8, 3], i
        assert rows[i].data == items[i][1]
    assert rows[5].outputs is None and rows[5].data == items[5][1]
    # The decoder's own words, without TensorFlow's node and function names.
    assert rows[5].reason.startswith("corrupt JPEG (") and "{{" not in rows[5].reason
    assert rows[8].reason == "unreadable: [Errno 5] Input/output error"
    assert rows[9].reason == "file changed while the conversion ran"
    assert rows[8].data is None and rows[9].data is None
    # One call per batch (3), plus the damaged photo's batch again one photo per call (4).
    assert function.calls == 3 + 4


def test_batches_run_at_once_and_come_back_in_input_order():
    # The first batch's read waits until the second batch is being read: with two threads
    # the second batch finishes first, and must still come back second.
    second_started = threading.Event()
    waited = []

    def read(item):
        index, data = item
        if index == 0:
            waited.append(second_started.wait(timeout=60))
        if index == 2:
            second_started.set()
        return data

    items = [(i, make_jpeg_bytes(8 * (i + 1), 8, seed=i)) for i in range(4)]
    rows = list(photo_batches.run(CountingShapes(), items, read, num_threads=2, batch_size=2))
    assert waited == [True]
    assert [row.item[0] for row in rows] == [0, 1, 2, 3]
    assert [int(row.outputs[0]) for row in rows] == [8, 16, 24, 32]


def test_items_are_read_lazily_with_a_bounded_number_in_flight():
    pulled = []
    data = make_jpeg_bytes(8, 8)

    def items():
        for i in range(1000):
            pulled.append(i)
            yield i, data

    rows = photo_batches.run(CountingShapes(), items(), _read, num_threads=2, batch_size=4)
    next(rows)
    # At most 4 batches per thread submitted, and the one being filled.
    assert len(pulled) <= (4 * 2 + 1) * 4
    assert sum(1 for _ in rows) == 999


def test_empty_input_and_a_batch_with_nothing_readable():
    function = CountingShapes()
    assert list(photo_batches.run(function, [], _read, num_threads=2)) == []
    rows = list(photo_batches.run(function, [("gone", OSError("no such file"))], _read, 1))
    assert [row.reason for row in rows] == ["unreadable: no such file"]
    assert function.calls == 0


@pytest.mark.slow
def test_predict_runner_and_the_saved_model_graph_refuse_the_same_rows():
    # The Python rule (predict's batch function through run) and its graph form
    # (photo_batch, the SavedModel's) on one batch: the same pixels for the good rows, the
    # same status for the refused ones, and the decoder's refusal in words vs CORRUPT.
    # Once with the damaged photo (run one by one) and once without (one call).
    good = make_jpeg_bytes(60, 80, seed=1)
    damaged = make_damaged_jpeg()
    settings, size = StoreSettings(max_short_side=48), (32, 32)
    function = photos.photo_input_function(settings, size)
    for datas in (
        [good, damaged, good[:-2], b"", make_jpeg_bytes(90, 50, seed=2)],
        [good, good[:-2], b"", make_jpeg_bytes(90, 50, seed=2)],
    ):
        rows = list(photo_batches.run(function, datas, bytes, num_threads=2))
        images, status = photos.photo_batch(tf.constant(datas), settings, size)
        images, status = images.numpy(), status.numpy()
        expected = {
            good: photo_header.OK,
            damaged: photo_header.CORRUPT,
            good[:-2]: photo_header.TRUNCATED,
            b"": photo_header.EMPTY,
        }
        assert status.tolist() == [expected.get(data, photo_header.OK) for data in datas]
        for i, data in enumerate(datas):
            if data == damaged:
                assert rows[i].outputs is None and rows[i].reason.startswith("corrupt JPEG (")
                continue
            row_image, row_status = rows[i].outputs
            assert row_status == status[i], i
            np.testing.assert_array_equal(row_image, images[i])


@pytest.mark.parametrize("error", [tf.errors.InvalidArgumentError, tf.errors.UnknownError])
def test_decoder_words_name_the_format_and_drop_tensorflow_noise(error):
    message = (
        "{{function_node __inference_lambda_12}} jpeg::Uncompress failed. Invalid JPEG data "
        "or size. [[{{node map/while/DecodeJpeg}}]] [Op:__inference_lambda_12]"
    )
    words = photo_batches.decoder_words(b"\x89PNG\r\n\x1a\nrest", error(None, None, message))
    assert words == "corrupt PNG (jpeg::Uncompress failed. Invalid JPEG data or size)"
