"""``--input_mode=features``: run the frozen base once, then train the head on its output.

Keras' 2016 "bottleneck features" recipe. While the whole base is frozen (phase one of a
pretrained backbone), every epoch would push every image through the same function
again; on a CPU that forward pass is ~all of the step. Here each record is decoded as
validation decodes it, sent once through preprocessing + base + the head's (weightless)
pooling, and kept in memory as a float32 vector; the head (dense, dropout, output) then
trains on those vectors in seconds per epoch. The head's layers are the inference model's
own (shared), so the saved model is the usual raw-RGB model.

What it gives up: augmentation (each image is seen once, un-augmented), so it suits
frozen-base phase one; a fine-tune phase (``--fine_tune_epochs``) streams the records with
``--augment`` as usual, through the whole model.
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from core.progress import Progress
from pipeline import dataset as dataset_lib
from pipeline import decode_once
from records.manifest import Manifest
from trainer.models import engine as engine_lib
from trainer.models import model as model_lib

INPUT_MODE = "features"


@dataclasses.dataclass(frozen=True)
class Split:
    """One split's pooled base outputs ([N, D] float32) and labels ([N] int32)."""

    features: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    train: Split
    val: Split
    seconds: float

    @property
    def images_per_sec(self) -> float:
        count = len(self.train.labels) + len(self.val.labels)
        return count / self.seconds if self.seconds else float("nan")


def _head_start(model: keras.Model) -> int:
    """Index of the first head layer (the pooling right after the base)."""
    base = model_lib.base_model(model)
    return model.layers.index(base) + 1


def feature_model(model: keras.Model) -> keras.Model:
    """Raw RGB -> the pooled base output, sharing ``model``'s layers (preprocess, base, pool)."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    # build_model's graph is a chain: input, preprocessing, base, pooling, dense, ...
    for layer in model.layers[1 : _head_start(model) + 1]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_features")


def head_model(model: keras.Model) -> keras.Model:
    """Pooled features -> class probabilities: ``model``'s trainable head layers, shared."""
    first_trained = _head_start(model) + 1
    inputs = keras.Input(shape=model.layers[first_trained - 1].output.shape[1:], name="features")
    x = inputs
    for layer in model.layers[first_trained:]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def check_base_frozen(model: keras.Model) -> None:
    """Features are computed once, so they are only valid while the base does not train.

    Raises:
      ValueError: Some base weights are trainable.
    """
    base = model_lib.base_model(model)
    if base.trainable_weights:
        raise ValueError(
            f"--input_mode=features computes the {base.name} base's output once, so the whole "
            f"base must be frozen in phase one: --freeze_layers={len(base.layers)} (the "
            "backbone's default for a pretrained base), or use --input_mode=stream"
        )


def check_fits(needed: int, max_gb: float | None, what: str, instead: str) -> None:
    """Raises ValueError when ``needed`` bytes of host memory exceed the limit.

    The rule decode_once uses too: ``max_gb``, else ``DEFAULT_MEMORY_FRACTION`` of
    MemAvailable, estimated from the manifest before any work.

    Args:
      needed: Bytes the cache will take.
      max_gb: An explicit limit in GB, or None.
      what: The message's start ("--input_mode=features needs ~1.2 GB for ...").
      instead: What to do instead.
    """
    limit = max_gb * 1e9 if max_gb is not None else None
    available = decode_once.available_bytes()
    if limit is None and available is not None:
        limit = decode_once.DEFAULT_MEMORY_FRACTION * available
    if limit is not None and needed > limit:
        raise ValueError(f"{what}, more than the {limit / 1e9:.2f} GB allowed; {instead}")


def extract(
    extractor: keras.Model | engine_lib.Runner,
    data: tf.data.Dataset,
    total: int,
    what: str,
    dtype: np.dtype = np.float32,
) -> Split:
    """``extractor``'s output for every batch of ``data`` (images, labels), as ``dtype``.

    ``extractor`` is a Keras model or an ``engine.runner``: anything with
    ``predict_on_batch``.
    """
    # The project's progress (core.progress): tqdm on a terminal, a log line every few
    # seconds elsewhere (Keras' Progbar redraws into log files on Linux).
    progress = Progress(what, total, enabled=None)
    features, labels = [], []
    try:
        for images, batch_labels in data:
            features.append(np.asarray(extractor.predict_on_batch(images), dtype=dtype))
            labels.append(batch_labels.numpy())
            progress.update(len(labels[-1]))
    finally:
        progress.close()
    return Split(np.concatenate(features), np.concatenate(labels).astype(np.int32))


def compute(
    model: keras.Model,
    manifest: Manifest,
    batch_size: int,
    max_gb: float | None = None,
    engine: str = "auto",
    cache_dir: str | None = None,
) -> FeatureCache:
    """Runs every train and val record once through ``model``'s frozen base.

    Args:
      model: The inference model (its base wholly frozen).
      manifest: The records'.
      batch_size: Images per batch.
      max_gb: Host memory the features may take (see ``check_fits``).
      engine: What runs the base, one of ``engine.ENGINES``.
      cache_dir: Where ``litert`` keeps its converted base (the model dir).

    Raises:
      ValueError: The base is not wholly frozen, or the features would not fit in memory.
    """
    check_base_frozen(model)
    extractor = feature_model(model)
    dims = math.prod(extractor.output_shape[1:])
    num_images = manifest.num_examples("train") + manifest.num_examples("val")
    needed = num_images * dims * 4
    check_fits(
        needed,
        max_gb,
        f"--input_mode=features needs ~{needed / 1e9:.2f} GB for {num_images} feature "
        f"vectors of {dims} floats",
        "use --pooling=avg (1 vector per image instead of a flattened map) or --input_mode=stream",
    )
    image_size = model_lib.input_size(model)
    start = time.perf_counter()
    # Conversion (if any) counts in the pass's time: it is what auto weighs.
    runner = engine_lib.runner(extractor, engine, num_images, cache_dir)
    splits = {
        split: extract(
            runner,
            dataset_lib.eval_dataset(manifest, batch_size, split=split, image_size=image_size),
            manifest.num_examples(split),
            f"{split} features",
        )
        for split in ("train", "val")
    }
    seconds = time.perf_counter() - start
    cache = FeatureCache(splits["train"], splits["val"], seconds)
    logging.info(
        "features: %d train + %d val vectors of %d floats (%.0f MB) in %.1f s, %.1f images/s",
        len(cache.train.labels),
        len(cache.val.labels),
        dims,
        needed / 1e6,
        seconds,
        cache.images_per_sec,
    )
    return cache


def _slices(split: Split) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((split.features, split.labels))


def _batched(ds: tf.data.Dataset, split: Split, batch_size: int, drop_remainder: bool):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if split.features.dtype != np.float32:
        # Kept narrower in memory (the bottom cache stores float16); cast per batch, after
        # the shuffle, so the buffer holds the narrow copies.
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(tf.data.AUTOTUNE)


def train_dataset(
    split: Split,
    batch_size: int,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """One shuffled pass of full batches, like ``pipeline.dataset.train_dataset``."""
    ds = _slices(split)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    # The whole split fits in the buffer (it is in memory already): a full shuffle.
    ds = ds.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    return _batched(ds, split, batch_size, drop_remainder=True)


def eval_dataset(
    split: Split, batch_size: int, input_context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
    """Every vector once, in record order, last batch partial (``eval_dataset``'s contract)."""
    ds = _slices(split)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    return _batched(ds, split, batch_size, drop_remainder=False)
