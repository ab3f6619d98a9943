"""Tests for trainer/callbacks.py's InputWait: it measures waiting, and changes nothing else."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import callbacks as callbacks_lib


def _model(steps_per_execution: int = 1) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    return model


def _data(delay_s: float = 0.0) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 8, 8, 3)).astype("float32")
    labels = np.array([0, 1, 0, 1], "int32")

    def batches():
        while True:
            time.sleep(delay_s)  # a pipeline that cannot keep up
            yield images, labels

    return tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((4, 8, 8, 3), tf.float32),
            tf.TensorSpec((4,), tf.int32),
        ),
    )


def test_input_wait_share_is_high_when_the_pipeline_is_slow():
    slow, fast = callbacks_lib.InputWait(), callbacks_lib.InputWait()
    history = _model().fit(_data(0.15), epochs=2, steps_per_epoch=4, callbacks=[slow], verbose=0)
    _model().fit(_data(0.0).prefetch(4), epochs=2, steps_per_epoch=4, callbacks=[fast], verbose=0)
    assert len(slow.per_epoch) == 2 and len(fast.per_epoch) == 2
    # A 150 ms wait per batch against a step of a few ms: nearly all of the step time.
    assert min(slow.per_epoch) > 0.8
    assert max(fast.per_epoch) < min(slow.per_epoch)
    assert history.history["input_wait_share"] == pytest.approx(slow.per_epoch)
    # (The first epoch's waits overlap the excluded first step's tracing.)
    assert history.history["input_wait_ms_per_step"][-1] > 140


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_input_wait_trains_exactly_as_without_it(steps_per_execution):
    plain, measured = _model(steps_per_execution), _model(steps_per_execution)
    inner = None

    class Check(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            nonlocal inner
            inner = self.model.train_function

    plain.fit(_data(), epochs=1, steps_per_epoch=4, verbose=0)
    wait = callbacks_lib.InputWait()
    measured.fit(_data(), epochs=1, steps_per_epoch=4, callbacks=[Check(), wait], verbose=0)
    for before, after in zip(plain.weights, measured.weights):
        np.testing.assert_allclose(before.numpy(), after.numpy(), rtol=1e-6)
    assert measured.train_function is inner  # put back at the end of fit
    assert len(wait.per_epoch) == 1 and 0 <= wait.per_epoch[0] <= 1


def test_input_wait_share_reaches_tensorboard(tmp_path):
    callbacks = [callbacks_lib.InputWait(), keras.callbacks.TensorBoard(str(tmp_path))]
    _model().fit(_data(), epochs=2, steps_per_epoch=3, callbacks=callbacks, verbose=0)
    tags = set()
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert "epoch_input_wait_share" in tags
