"""The model's demand against the input's supply, measured with the trainer's own code.

Three figures per input variant (``INPUTS``), for one training configuration:

* **model rate**: the real model's training step (``trainer.models.model.build_model`` with the
  backbone, frozen layers, precision policy, strategy, batch size and XLA setting a
  ``train`` run would use, compiled as ``trainer.training.fit`` compiles it) on a synthetic uint8
  batch already on the device: images/s with no input cost at all;
* **fed rate**: the same model fed by the variant's pipeline exactly as ``train`` feeds
  it (``trainer.training.data.make_data``), with the share of step time spent in ``next()`` on
  the iterator (as ``trainer.training.callbacks.InputWait`` measures it in every run);
* **host rate**: the pipeline alone (``trainer.training.data.train_pipeline``) with tf.data's
  private thread pool at 1 thread and at every core: images/s, and CPU ms per image.

Host cores the model needs = model rate / the 1-thread host rate.

Every step is synchronised (its loss read back), as in ``train``, where the per-batch
callbacks read the logs; so the step time is the device's, and time spent waiting in
``next()`` is time the device had nothing to do.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from benchmarks import timing
from pipeline import decode_once
from records.manifest import Manifest
from trainer.training import data as data_lib
from trainer.training import fit
from trainer.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class InputVariant:
    """A way ``train`` can be fed: the TrainConfig settings that select it."""

    name: str
    description: str
    settings: dict[str, Any]


_INPUTS: tuple[InputVariant, ...] = (
    InputVariant(
        "stream_fused",
        "records decoded every epoch, fused crop-decode augmentation (train's default)",
        {"input_mode": "stream", "augment": "fused"},
    ),
    InputVariant(
        "stream_keras_cv_model",
        "records decoded every epoch, keras-cv augmentation as the model's first layers",
        {"input_mode": "stream", "augment": "keras_cv_model"},
    ),
    InputVariant(
        "decode_once_host",
        "decoded once into memory, crop/flip/jitter on the host (batched ops)",
        {"input_mode": "decode_once", "augment": "fused", "augment_placement": "host"},
    ),
    InputVariant(
        "decode_once_accelerator",
        "decoded once into memory, crop/flip/jitter as the model's first layer",
        {"input_mode": "decode_once", "augment": "fused", "augment_placement": "accelerator"},
    ),
)
INPUTS: dict[str, InputVariant] = {variant.name: variant for variant in _INPUTS}


def build_models(
    config: TrainConfig, strategy: tf.distribute.Strategy
) -> tuple[keras.Model, keras.Model]:
    """(the model that trains, the inference model), built and compiled as ``train`` does
    for phase one (``config.jit_compile`` is the XLA choice under test)."""
    fit_model, inference_model = fit.build_models(config, strategy)
    with strategy.scope():
        fit.compile_model(fit_model, config, config.learning_rate, total_steps=1000)
    return fit_model, inference_model


def input_shape(config: TrainConfig) -> tuple[int, int, int]:
    """Shape of one image as the pipeline delivers it to the model."""
    if config.input_mode == "decode_once" and config.augment_placement == "accelerator":
        side = decode_once.decoded_side(config.image_shape, config.augment != "none")
        return (side, side, 3)
    return (*config.image_shape, 3)


def _labels(config: TrainConfig, labels: np.ndarray) -> np.ndarray:
    return labels if config.head == "softmax" else labels[:, None].astype("float32")


def synthetic_batch(config: TrainConfig, strategy: tf.distribute.Strategy):
    """A random uint8 batch placed on the replicas' devices (nothing left to transfer)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (config.batch_size, *input_shape(config)), dtype=np.uint8)
    labels = _labels(config, rng.integers(0, 2, config.batch_size).astype("int32"))
    per_replica = config.batch_size // strategy.num_replicas_in_sync

    def replica_value(context):
        start = context.replica_id_in_sync_group * per_replica
        return (
            tf.identity(images[start : start + per_replica]),
            tf.identity(labels[start : start + per_replica]),
        )

    return strategy.experimental_distribute_values_from_function(replica_value)


def _build_step(model: keras.Model, first_batch) -> None:
    """One plain ``train_on_batch`` builds the optimizer state and the compiled step."""
    images, labels = first_batch
    model.train_on_batch(images, labels)


def time_steps(model: keras.Model, next_batch, steps: int, warmup: int) -> dict[str, float]:
    """Runs ``warmup`` + ``steps`` training steps on ``next_batch()``; times the last ones.

    Returns:
      images/s (global batch x steps / seconds), ms per step, and the share of the time
      spent in ``next_batch()`` (waiting for input).
    """
    train_function = model.train_function
    for _ in range(warmup):
        float(train_function([next_batch()])["loss"])
    wait = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        fetch = time.perf_counter()
        batch = next_batch()
        wait += time.perf_counter() - fetch
        # Reading the loss back synchronises the step, as train's callbacks do.
        float(train_function([batch])["loss"])
    seconds = time.perf_counter() - start
    return {
        "steps": steps,
        "ms_per_step": 1000 * seconds / steps,
        "input_wait_share": wait / seconds,
        "input_wait_ms_per_step": 1000 * wait / steps,
        "seconds": seconds,
    }


def host_rate(
    dataset: tf.data.Dataset, threads: int, batches: int, warmup: int
) -> dict[str, float]:
    """The pipeline alone with tf.data's private thread pool at ``threads`` threads."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    # Ops inside the pipeline's functions then run on that pool alone.
    options.threading.max_intra_op_parallelism = 1
    passed = timing.time_pass(lambda: iter(dataset.repeat().with_options(options)), batches, warmup)
    return {
        "threads": threads,
        "images_per_sec": passed.images / passed.seconds,
        "cpu_ms_per_image": 1000 * passed.cpu_seconds / passed.images,
    }


def prime(dataset: tf.data.Dataset) -> float:
    """One full pass (fills a decode-once cache); returns its seconds."""
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


def model_kind(config: TrainConfig) -> str:
    """Which model ``config`` trains: plain, or with an augmentation layer first, and the
    image size it is fed."""
    augmenter = data_lib.model_augmenter(config)
    name = augmenter.layer.name if augmenter is not None else "plain"
    return f"{name} {input_shape(config)[0]}px"


def measure_model(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    *,
    steps: int,
    warmup_steps: int,
) -> tuple[keras.Model, dict[str, Any]]:
    """Builds ``config``'s training model and times it on a synthetic on-device batch."""
    logging.info("building the %s model and timing it on synthetic batches", model_kind(config))
    fit_model, _ = build_models(config, strategy)
    _build_step(fit_model, _plain_batch(config))
    batch = synthetic_batch(config, strategy)
    synthetic = time_steps(fit_model, lambda: batch, steps, warmup_steps)
    synthetic["images_per_sec"] = steps * config.batch_size / synthetic["seconds"]
    synthetic["jit_compile"] = bool(fit_model.jit_compile)
    synthetic["trainable_weights"] = len(fit_model.trainable_weights)
    synthetic["weights"] = len(fit_model.weights)
    return fit_model, synthetic


def measure_input(
    variant: InputVariant,
    config: TrainConfig,
    manifest: Manifest,
    strategy: tf.distribute.Strategy,
    fit_model: keras.Model,
    synthetic: dict[str, Any],
    *,
    steps: int,
    warmup_steps: int,
    host_batches: int,
    host_warmup: int,
) -> dict[str, Any]:
    """The pipeline alone (1 thread, every core), then ``fit_model`` fed by it."""
    logging.info("%s: the pipeline alone, 1 thread and %d", variant.name, timing.cores())
    pipeline = data_lib.train_pipeline(config, manifest)
    first_pass = prime(pipeline) if config.input_mode == "decode_once" else None
    hosts = [
        host_rate(pipeline, threads, host_batches, host_warmup)
        for threads in sorted({1, timing.cores()})
    ]
    del pipeline

    logging.info("%s: the model fed by it", variant.name)
    data = data_lib.make_data(config, manifest, strategy)
    iterator = iter(data.train)
    fed = time_steps(fit_model, lambda: next(iterator), steps, warmup_steps)
    fed["images_per_sec"] = steps * config.batch_size / fed["seconds"]
    one_thread = hosts[0]["images_per_sec"]
    return {
        "name": variant.name,
        "description": variant.description,
        "model": model_kind(config),
        "model_images_per_sec": synthetic["images_per_sec"],
        "fed": fed,
        "host": hosts,
        "decode_once_first_pass_seconds": first_pass,
        "host_cores_needed": synthetic["images_per_sec"] / one_thread,
        "fed_over_model": fed["images_per_sec"] / synthetic["images_per_sec"],
    }


def _plain_batch(config: TrainConfig):
    """A host batch for the one build step (not distributed)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (config.batch_size, *input_shape(config)), dtype=np.uint8)
    return images, _labels(config, rng.integers(0, 2, config.batch_size).astype("int32"))
