"""The training run's input: distributed train/val datasets, their step counts, and the
augmentation layer the model runs first when augmentation happens on the accelerator."""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from absl import logging

from pipeline import dataset as dataset_lib
from pipeline import decode_once
from records.manifest import Manifest
from trainer.training import features as features_lib
from trainer.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Distributed datasets and how many steps make an epoch of each."""

    train: tf.distribute.DistributedDataset
    val: tf.distribute.DistributedDataset
    steps_per_epoch: int
    validation_steps: int | None


def _labels_for_head(ds: tf.data.Dataset, head: str) -> tf.data.Dataset:
    if head == "softmax":
        return ds  # Sparse int labels, as the pipeline yields them.
    # The 1-unit sigmoid head trains on float [B, 1] targets.
    return ds.map(lambda images, labels: (images, tf.cast(labels[:, None], tf.float32)))


def train_pipeline(
    config: TrainConfig,
    manifest: Manifest,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """One pass of training batches for ``config``'s input mode (streamed from the records,
    or decoded once and kept in memory), before labels are fitted to the head.

    ``benchmark_train`` times exactly this pipeline, so it stays one function.
    """
    if config.input_mode == "decode_once":
        return decode_once.train_dataset(
            manifest,
            config.batch_size,
            image_size=config.image_shape,
            placement=config.augment_placement,
            augment=config.augment != "none",
            augment_strength=config.augment_strength,
            seed=config.seed,
            deterministic=config.deterministic,
            max_gb=config.decode_once_max_gb,
            input_context=input_context,
        )
    return dataset_lib.train_dataset(
        manifest,
        # The pipeline takes the global batch and applies the context's per-replica split.
        config.batch_size,
        image_size=config.image_shape,
        augment=config.augment,
        augment_strength=config.augment_strength,
        seed=config.seed,
        deterministic=config.deterministic,
        cache=config.cache,
        shuffle_buffer=config.shuffle_buffer,
        input_context=input_context,
        data_service=config.data_service,
        data_service_mode=config.data_service_mode,
    )


def make_data(
    config: TrainConfig,
    manifest: Manifest,
    strategy: tf.distribute.Strategy,
    cache: features_lib.FeatureCache | None = None,
) -> TrainData:
    """Builds the input of a run from the (once-read) manifest.

    With ``cache`` (``--input_mode=features``) the batches are the cached base features
    instead of images, in the same epochs, steps and validation passes.

    Raises:
      ValueError: No val split, or a batch larger than the training split.
      FileNotFoundError: A listed shard is missing.
    """
    num_train = manifest.split("train").num_examples
    num_val = manifest.num_examples("val")
    if num_val == 0:
        raise ValueError(
            f"{config.records_dir} has no val examples; rerun make_records with a val fraction > 0"
        )
    manifest.split("val")  # Its shards must exist too: fail now, not after an epoch.
    steps_per_epoch = config.steps_per_epoch or num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {num_train} training examples"
        )
    replicas = strategy.num_replicas_in_sync
    validation_steps = config.validation_steps
    if validation_steps is None and replicas > 1:
        # Full global batches only (see val_fn): val minus less than one batch.
        validation_steps = max(1, num_val // config.batch_size)
        logging.info(
            "%d replicas: validating on %d full batches (%d of %d val examples)",
            replicas,
            validation_steps,
            validation_steps * config.batch_size,
            num_val,
        )
    elif validation_steps is None:
        # One replica: exactly one pass over val (the last batch is partial). Keras cannot
        # know that length (the sharded reader has no known cardinality) and would find the
        # end by running out of data, with a misleading "input ran out of data" warning.
        validation_steps = math.ceil(num_val / config.batch_size)

    def train_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        # The pipeline yields one pass; Keras counts epochs with steps_per_epoch.
        if cache is not None:
            ds = features_lib.train_dataset(cache.train, config.batch_size, config.seed, ctx)
        else:
            ds = train_pipeline(config, manifest, ctx)
        return _labels_for_head(ds, config.head).repeat()

    def val_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        if cache is not None:
            ds = features_lib.eval_dataset(cache.val, config.batch_size, ctx)
        else:
            ds = dataset_lib.eval_dataset(
                manifest,
                config.batch_size,
                split="val",
                image_size=config.image_shape,
                cache=config.cache,
                input_context=ctx,
            )
        ds = _labels_for_head(ds, config.head)
        if replicas == 1:
            # Keras keeps one val iterator across epochs when validation_steps is set, so
            # the pass repeats; validation_steps = ceil(val / batch) is then exactly one
            # pass per epoch, every example once.
            return ds.repeat()
        # Keras 3 cannot evaluate a step where replicas get batches of different sizes
        # (an empty or partial last batch fails in AddN), so with several replicas val is
        # re-batched into full batches and run for a fixed number of steps.
        per_replica = ctx.get_per_replica_batch_size(config.batch_size)
        return ds.unbatch().repeat().batch(per_replica, drop_remainder=True)

    return TrainData(
        train=strategy.distribute_datasets_from_function(train_fn),
        val=strategy.distribute_datasets_from_function(val_fn),
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
    )


@dataclasses.dataclass(frozen=True)
class ModelAugmenter:
    """A layer the training model runs first (training only), and the input shape the
    training model then takes (None: the inference model's)."""

    layer: keras.layers.Layer
    input_shape: tuple[int | None, ...] | None = None


def model_augmenter(config: TrainConfig) -> ModelAugmenter | None:
    """The accelerator-side augmentation for ``config``, or None when the input pipeline
    augments (or nothing does). Build it inside the strategy's scope."""
    if config.input_mode == "decode_once":
        if config.augment == "none" or config.augment_placement != "accelerator":
            return None
        from pipeline import crop_augment

        return ModelAugmenter(
            crop_augment.DecodedCropAugment(
                config.image_shape, config.augment_strength, config.seed, name="decoded_crop"
            ),
            # Training batches are the stored S x S images; validation batches (and the
            # saved model) have the output size: any size goes in.
            input_shape=(None, None, 3),
        )
    if config.augment in dataset_lib.MODEL_AUGMENTS:
        from pipeline import keras_cv_augment

        return ModelAugmenter(
            keras_cv_augment.make_augmenter(strength=config.augment_strength, seed=config.seed)
        )
    return None
