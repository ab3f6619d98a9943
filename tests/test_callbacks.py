"""Tests for trainer/training/callbacks.py's InputWait: it measures waiting, and changes nothing
else.

Time here is a clock the test drives (``_Clock``): fetching a batch and running a step
take exactly as long as the test says, whatever the machine.
"""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.training import callbacks as callbacks_lib


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


class _Clock:
    """A fake ``time.perf_counter`` that moves only when the test advances it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _data(clock: _Clock | None = None, fetch_s: float = 0.0) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 8, 8, 3)).astype("float32")
    labels = np.array([0, 1, 0, 1], "int32")

    def batches():
        while True:
            if clock is not None:
                clock.advance(fetch_s)  # producing this batch takes fetch_s
            yield images, labels

    ds = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((4, 8, 8, 3), tf.float32),
            tf.TensorSpec((4,), tf.int32),
        ),
    )
    # No prefetch anywhere: each batch is produced inside the fetch that asks for it, so
    # the clock moves during that fetch and nowhere else.
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    options.autotune.enabled = False
    return ds.with_options(options)


class _Step(keras.callbacks.Callback):
    """Listed before InputWait: each training step takes ``step_s`` on the clock."""

    def __init__(self, clock: _Clock, step_s: float):
        super().__init__()
        self.clock, self.step_s = clock, step_s

    def on_train_batch_end(self, batch, logs=None):
        self.clock.advance(self.step_s)


@pytest.mark.parametrize("fetch_ms, share", [(150, 0.75), (0, 0.0)])
def test_input_wait_share_is_the_share_of_step_time_spent_fetching(monkeypatch, fetch_ms, share):
    clock = _Clock()
    monkeypatch.setattr(callbacks_lib, "time", types.SimpleNamespace(perf_counter=clock))
    wait = callbacks_lib.InputWait()
    # Each step: fetch_ms waiting for the batch, then 50 ms of compute.
    history = _model().fit(
        _data(clock, fetch_ms / 1000),
        epochs=2,
        steps_per_epoch=4,
        callbacks=[_Step(clock, 0.05), wait],
        verbose=0,
    )
    assert wait.per_epoch == pytest.approx([share, share])
    assert history.history["input_wait_share"] == pytest.approx(wait.per_epoch)
    assert history.history["input_wait_ms_per_step"] == pytest.approx([fetch_ms, fetch_ms])


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
