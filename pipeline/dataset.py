"""TFRecord shards -> (uint8 images, int32 labels) batches: one function per mode.

Both modes are one straight chain::

  shards of the split (manifest) -> this worker's files -> interleave, count-check and
  parse (``pipeline.shards``) -> [cache encoded records] -> (train) shuffle ->
  batch -> decode + augment the batch (one function, chosen once) -> prefetch, last and once

Augmentation is one choice, ``augment=`` (``AUGMENTS``):

* ``"fused"`` (default, the fast path): a random crop window is sampled from each
  image's recorded size and only that window is decoded, at a DCT-domain downscale,
  then resized, flipped and jittered (``pipeline.fused``).
* ``"keras_cv_data"``: whole-image decode, then keras-cv flip, rotation, zoom and
  translation on the batch inside tf.data (``pipeline.keras_cv_augment``). Richer
  geometry, but several times slower on a CPU host (see BUILD_NOTES).
* ``"keras_cv_model"``: the same keras-cv layers run as the model's first layers, on
  the accelerator, in training only (the trainer wraps the model); here the batch is
  only decoded.
* ``"none"``: decode only (shuffled order, no augmentation).

Images stay uint8 (4x less host-to-device traffic than float32); normalisation belongs
to the model, so a saved model takes raw RGB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from absl import logging

from pipeline import decode, fused, shards
from records.manifest import Manifest

AUGMENTS: tuple[str, ...] = ("fused", "keras_cv_data", "keras_cv_model", "none")
# The augment choices the model applies itself (the pipeline only decodes).
MODEL_AUGMENTS: tuple[str, ...] = ("keras_cv_model",)
DATA_SERVICE_MODES: tuple[str, ...] = ("parallel_epochs", "distributed_epoch")
# Serialized records, ~25 kB each at full resolution and ~8 kB at --max_short_side 160: a
# 2,048-record buffer costs 15..50 MB and mixes well across the interleaved shards.
DEFAULT_SHUFFLE_BUFFER = 2048

# (encoded [B], heights [B], widths [B], seed [2]) -> uint8 images [B, H, W, 3]
BatchFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def _decode_batch_fn(image_size: tuple[int, int], max_ratio: int) -> BatchFn:
    """The deterministic decode (whole image resized to ``image_size``) of a batch."""

    def decode_batch(encoded, heights, widths, seed):
        del seed  # Deterministic.
        return decode.decode_and_resize_batch(encoded, heights, widths, image_size, max_ratio)

    return decode_batch


def _keras_cv_batch_fn(plain: BatchFn, strength: float, seed: int | None) -> BatchFn:
    # Imported here: keras-cv is slow to import and only this mode needs it in tf.data.
    from pipeline import keras_cv_augment

    augmenter = keras_cv_augment.make_augmenter(strength=strength, seed=seed)

    def augment_batch(encoded, heights, widths, batch_seed):
        images = plain(encoded, heights, widths, batch_seed)
        return keras_cv_augment.to_uint8(augmenter(images, training=True))

    return augment_batch


def batch_fn(
    augment: str, image_size: tuple[int, int], strength: float, seed: int | None, max_ratio: int
) -> BatchFn:
    """The one function that turns a batch of records into images, for ``augment``."""
    plain = _decode_batch_fn(image_size, max_ratio)
    if augment == "fused":
        return lambda encoded, heights, widths, batch_seed: fused.augment_batch(
            encoded, heights, widths, batch_seed, image_size, strength, max_ratio
        )
    if augment == "keras_cv_data":
        return _keras_cv_batch_fn(plain, strength, seed)
    return plain  # "none", and "keras_cv_model" (the model augments)


def batch_seeds(seed: int | None) -> tf.data.Dataset:
    # One stateless seed per batch, drawn in stream order: reproducible with a seed and
    # deterministic order, and different every epoch thanks to rerandomize_each_iteration.
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Let tf.data's autotuner size the parallelism and buffers (the AUTOTUNE knobs).
    options.autotune.enabled = True
    return options


def _cache(dataset: tf.data.Dataset, cache: bool | str) -> tf.data.Dataset:
    if not cache:
        return dataset
    # The parsed, still-encoded records: compact (the decode runs every epoch anyway,
    # since in training it is the augmentation). True: memory; a string: a file prefix.
    return dataset.cache("" if cache is True else str(cache))


def _through_service(batches: tf.data.Dataset, service: str, mode: str) -> tf.data.Dataset:
    """``batches`` made on the tf.data service's workers, in processing mode ``mode``."""
    logging.info("tf.data service at %s, processing_mode=%s", service, mode)
    if mode == "parallel_epochs":
        # One job over the repeated chain. Each service job builds the chain afresh from
        # its graph, so a job per pass would restart the seeded shuffles and the batch
        # seed stream every pass: with a seed, every epoch would be the first. Repeated on
        # the worker, each pass is a new iteration of the same datasets, whose seed
        # generators move on exactly as the local chain's do when it is iterated again.
        batches = batches.repeat()
    # distributed_epoch keeps one job per pass, because a job is what the service makes
    # exactly once: its dispatcher hands out each file once per job. Repeated on the
    # workers, one worker starts the next repetition's files while another still reads
    # the current one, so no consumer could tell where a pass ends. The price: with a
    # seed, every pass restarts the seeded chain (docs/pipeline.md).
    return batches.apply(
        tf.data.experimental.service.distribute(processing_mode=mode, service=service)
    )


def train_dataset(
    manifest: Manifest,
    batch_size: int,
    *,
    split: str = "train",
    image_size: int | Sequence[int] = (128, 128),
    augment: str = "fused",
    augment_strength: float = 1.0,
    seed: int | None = None,
    deterministic: bool = False,
    cache: bool | str = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    input_context: tf.distribute.InputContext | None = None,
    data_service: str | None = None,
    data_service_mode: str = "parallel_epochs",
) -> tf.data.Dataset:
    """Shuffled, augmented training batches; one pass over the split per iteration.

    Not repeated: iterate it once per epoch (or ``.repeat()`` it). Each iteration
    reshuffles and re-samples the augmentation. Through the tf.data service in
    ``parallel_epochs`` mode it is endless instead: the passes come back to back from one
    service job, batch for batch those of the local chain's successive iterations, so
    iterate it once and count steps (the trainer does); every new iteration is a new job
    and starts again from the first pass.

    Args:
      manifest: The records directory's manifest (``Manifest.load``).
      batch_size: The *global* batch size. Without ``input_context`` every batch has
        this many examples; with one, ``input_context.get_per_replica_batch_size``
        (the convention of ``strategy.distribute_datasets_from_function``).
      split: Which split to read.
      image_size: Output (height, width), or one int for a square.
      augment: One of ``AUGMENTS`` (see the module docstring).
      augment_strength: Scales the augmentation ranges; 1.0 is the tuned default.
      seed: Seeds the file and record shuffles and the augmentation. With
        ``deterministic=True`` the same seed gives the same batches, run after run.
      deterministic: Keep element order fixed (slower: a slow element holds up the rest).
      cache: True caches the parsed, still-encoded records in memory, a string in files
        with that prefix (for data read from slow storage).
      shuffle_buffer: Records in the shuffle buffer.
      input_context: From ``tf.distribute``; this worker then reads only its share of the
        shard files (by example, with a warning, if there are fewer files than workers).
      data_service: ``grpc://host:port`` of a tf.data service dispatcher; the chain then
        runs on the service's workers (``pipeline_service`` starts them).
      data_service_mode: ``"parallel_epochs"`` (every service worker makes whole passes,
        endlessly) or ``"distributed_epoch"`` (one pass per iteration, split among the
        workers: each example exactly once, or at most once if a worker restarts).

    Returns:
      A dataset of (uint8 [B, H, W, 3], int32 [B]) with static B (drop_remainder).

    Raises:
      ValueError: For a bad argument or a split without shards.
      FileNotFoundError: A listed shard is missing.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r}: expected one of {', '.join(AUGMENTS)}")
    if augment_strength < 0:
        raise ValueError(f"augment_strength={augment_strength} must be >= 0")
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer={shuffle_buffer} must be >= 1")
    if data_service_mode not in DATA_SERVICE_MODES:
        raise ValueError(
            f"data_service_mode={data_service_mode!r}: expected one of "
            f"{', '.join(DATA_SERVICE_MODES)}"
        )
    image_size = decode.size_pair(image_size)
    per_replica_batch = shards.per_replica_batch_size(batch_size, input_context)
    split_info = manifest.split(split)
    max_ratio = decode.max_useful_ratio(manifest.max_short_side, image_size)
    to_images = batch_fn(augment, image_size, augment_strength, seed, max_ratio)
    logging.info(
        "train_dataset: %d shard(s) of %s, batch %d, image_size %s, augment=%s (strength %g)",
        len(split_info.shards),
        split,
        per_replica_batch,
        image_size,
        augment,
        augment_strength,
    )

    examples = shards.read_examples(
        split_info.paths,
        split_info.counts,
        training=True,
        deterministic=deterministic,
        seed=seed,
        input_context=input_context,
    )
    examples = _cache(examples, cache)
    # Shuffle the compact encoded records, not decoded pixels (more records per MB), and
    # before batching so every batch mixes shards and classes.
    examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # drop_remainder: static batch shapes for XLA / TPU and equal per-replica batches.
    batches = tf.data.Dataset.zip(
        examples.batch(per_replica_batch, drop_remainder=True), batch_seeds(seed)
    ).map(
        lambda batch, batch_seed: (to_images(*batch[:3], batch_seed), batch[3]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if data_service:
        batches = _through_service(batches, data_service, data_service_mode)
    # Prefetch once, last: overlaps producing batch n+1 with the consumer's step n.
    return batches.with_options(options(deterministic)).prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    manifest: Manifest,
    batch_size: int,
    *,
    split: str = "val",
    image_size: int | Sequence[int] = (128, 128),
    cache: bool | str = False,
    input_context: tf.distribute.InputContext | None = None,
    with_filenames: bool = False,
) -> tf.data.Dataset:
    """Evaluation batches: fixed order, no augmentation, every example exactly once.

    The last partial batch is kept (so the batch dimension is not static). With
    ``input_context`` each worker sees its own disjoint share; together they cover the
    split once. ``batch_size`` is global, as in ``train_dataset``.

    ``with_filenames=True`` adds each example's ``image/filename`` (the source name as
    its original bytes; ``records.inputs.sources.display_name`` after a ``surrogateescape``
    decode shows it), parsed with the rest of the record, so it cannot fall out of step
    with its image; off by default, as the other callers do not need it.

    Returns:
      A dataset of (uint8 [B, H, W, 3], int32 [B]), or with ``with_filenames``
      (uint8 [B, H, W, 3], int32 [B], string [B]).

    Raises:
      ValueError, FileNotFoundError: As ``train_dataset``.
    """
    image_size = decode.size_pair(image_size)
    per_replica_batch = shards.per_replica_batch_size(batch_size, input_context)
    split_info = manifest.split(split)
    to_images = _decode_batch_fn(
        image_size, decode.max_useful_ratio(manifest.max_short_side, image_size)
    )
    logging.info(
        "eval_dataset: %d shard(s) of %s, batch %d, image_size %s",
        len(split_info.shards),
        split,
        per_replica_batch,
        image_size,
    )
    examples = shards.read_examples(
        split_info.paths,
        split_info.counts,
        training=False,
        deterministic=True,
        seed=None,
        input_context=input_context,
        with_filenames=with_filenames,
    )
    examples = _cache(examples, cache)
    batches = examples.batch(per_replica_batch, drop_remainder=False).map(
        # (encoded, heights, widths, labels[, filenames]) -> (images, labels[, filenames])
        lambda encoded, heights, widths, *rest: (to_images(encoded, heights, widths, None), *rest),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return batches.with_options(options(True)).prefetch(tf.data.AUTOTUNE)
