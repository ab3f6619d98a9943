"""TFRecord shards -> (uint8 images, int32 labels) batches: one function per mode.

The chain, in both modes::

  list shards (manifest) -> shard files per worker -> interleave (per shard: read,
  count-check and parse in chunks of 64, unbatched in file order) ->
  (train) shuffle -> decode + resize [+ fused augmentation] -> batch ->
  (train, augment="keras_cv") keras-cv augmentation on batches -> prefetch, last and once

Augmentation (``augment=``):

* ``"fused"`` (default, the fast path): the geometric augmentation is fused into the
  decode. A random crop window (35%..100% of the area, aspect 3:4..4:3 at strength 1) is
  sampled from the header's size, only that window is decoded with
  ``tf.image.decode_and_crop_jpeg`` at a DCT-domain downscale, then resized, flipped and
  given a small brightness/contrast jitter (``pipeline.decode.decode_crop_flip`` does the
  same for one image). Parameters are sampled per batch and the decode runs as one
  ``tf.map_fn`` per batch, so tf.data's per-element overhead is paid per batch.
  Stateless random ops keyed per batch (one seed each, drawn in stream order), so it is
  reproducible with a seed.
* ``"keras_cv"``: whole-image decode, then ``pipeline.augment.make_augmenter`` (keras-cv
  flip, rotation, zoom, translation) on batches inside tf.data. Richer geometry but about
  10x slower on a CPU host; prefer running that augmenter on the accelerator as the
  model's first layers (the trainer's ``--augment_on=model``) with ``augment="none"`` here.
* ``"none"``: the deterministic eval decode (whole image resized), training order only.

Images stay uint8 (4x less host-to-device traffic than float32); normalisation belongs
to the model, so a saved model takes raw RGB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
from absl import logging

from pipeline import decode
from records import schema

AUGMENT_MODES: tuple[str, ...] = ("none", "fused", "keras_cv")
DATA_SERVICE_MODES: tuple[str, ...] = ("parallel_epochs", "distributed_epoch")
# Serialized records, ~25 kB each at full resolution and ~8 kB at --max_short_side 160: a
# 2,048-record buffer costs 15..50 MB and mixes well across the interleaved shards.
DEFAULT_SHUFFLE_BUFFER = 2048
# How many shards are read at once; more only adds open files and memory.
_MAX_CYCLE_LENGTH = 16


def list_shards(records_dir: str, split: str) -> tuple[list[str], list[int]]:
    """Shard paths of ``split`` from the manifest, with each shard's record count.

    Raises:
      FileNotFoundError: No manifest ("no files match ..."), or a listed shard is missing.
      ValueError: The split is not in the manifest or has no shards.
    """
    pattern = os.path.join(records_dir, f"{split}-*-of-*.tfrecord")
    try:
        manifest = schema.read_manifest(records_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no files match {pattern}: {e}") from e
    splits = manifest.get("splits", {})
    if split not in splits or not splits[split].get("shards"):
        raise ValueError(
            f"no files match {pattern}: {schema.manifest_path(records_dir)} lists no shards "
            f"for split {split!r} (it has {sorted(splits)}); rerun make_records"
        )
    files = schema.shard_paths(records_dir, split, manifest)  # raises on a missing shard
    counts = [int(s["num_examples"]) for s in splits[split]["shards"]]
    return files, counts


def max_dct_ratio(records_dir: str, image_size: int | Sequence[int]) -> int:
    """The largest DCT ratio the records can use, from the manifest's ``max_short_side``."""
    settings = schema.read_manifest(records_dir).get("settings", {}) or {}
    return decode.max_useful_ratio(settings.get("max_short_side"), image_size)


# Records are read, counted and parsed in chunks of this many per shard: per-element
# tf.data overhead (~5-10 us per stage and element) is then paid per chunk, not per record.
_READ_CHUNK = 64
# The features the pipeline needs: parsing only these skips the other strings.
_PARSE_KEYS: tuple[str, ...] = (schema.ENCODED, schema.HEIGHT, schema.WIDTH, schema.LABEL)


def _parse_chunk(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    # tf.io.parse_example on a vector of records: one op call for the whole chunk.
    features = tf.io.parse_example(
        serialized, {key: schema.FEATURE_SPEC[key] for key in _PARSE_KEYS}
    )
    return (
        features[schema.ENCODED],
        tf.cast(features[schema.HEIGHT], tf.int32),
        tf.cast(features[schema.WIDTH], tf.int32),
        tf.cast(features[schema.LABEL], tf.int32),
    )


def _read_checked_shard(path: tf.Tensor, expected: tf.Tensor) -> tf.data.Dataset:
    """Parsed examples (encoded, height, width, label) of one shard, in file order; fails
    naming the shard if it is corrupt or truncated.

    A plain TFRecordDataset reports corruption as ``DataLossError: corrupted record at
    N`` without the file name. Here the read error is logged and ends that shard's read
    (``ignore_errors`` moves on to the next file); records are then counted in chunks and
    an empty sentinel chunk after the last one checks the total against the manifest, so
    a damaged shard stops the run with an ``InvalidArgumentError`` naming it and never
    drops records silently (a clean cut at a record boundary is caught too). The count,
    the check and the parse run once per chunk of ``_READ_CHUNK`` records, and the chunk
    is unbatched here, inside the shard's reader, so the interleaved record order is the
    same as reading record by record.
    """
    chunks = tf.data.TFRecordDataset(path).ignore_errors(log_warning=True).batch(_READ_CHUNK)
    # Every real chunk holds >= 1 record, so an empty chunk marks the end of the shard.
    with_end = chunks.concatenate(tf.data.Dataset.from_tensors(tf.zeros([0], tf.string)))

    def count_and_check(count, chunk):
        size = tf.size(chunk, out_type=tf.int64)
        ok = tf.logical_or(size > 0, tf.equal(count, expected))
        assert_op = tf.debugging.Assert(
            ok,
            [
                "corrupt or truncated shard",
                path,
                "records read:",
                count,
                "expected (manifest):",
                expected,
                "-> run verify_records on the directory and rerun make_records to rewrite it",
            ],
        )
        with tf.control_dependencies([assert_op]):
            return count + size, tf.identity(chunk)

    checked = with_end.scan(tf.constant(0, tf.int64), count_and_check)
    return checked.map(_parse_chunk).unbatch()


def _records(
    files: list[str],
    counts: list[int],
    *,
    training: bool,
    deterministic: bool,
    seed: int | None,
    input_context: tf.distribute.InputContext | None,
) -> tf.data.Dataset:
    """Parsed (encoded, height, width, label) of ``files``, this worker's share only,
    interleaved record by record."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    file_ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(counts, tf.int64)))
    shard_examples = False
    if num_pipelines > 1:
        if len(files) >= num_pipelines:
            # Shard the file list before shuffling it: every worker must cut the same list.
            file_ds = file_ds.shard(num_pipelines, pipeline_id)
        else:
            # Every worker reads every file and keeps every n-th record: correct, disjoint
            # and complete, but each worker pays to read all the data.
            logging.warning(
                "%d shard file(s) for %d input pipelines: sharding by example instead of by "
                "file (each worker reads all files). Write at least %d shards "
                "(make_records --num_shards) to avoid this.",
                len(files),
                num_pipelines,
                num_pipelines,
            )
            shard_examples = True
    if training and not shard_examples:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = file_ds.interleave(
        _read_checked_shard,
        cycle_length=min(len(files), _MAX_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        # Example sharding needs the same record order on every worker.
        deterministic=deterministic or shard_examples,
    )
    if shard_examples:
        records = records.shard(num_pipelines, pipeline_id)
    return records


def _per_replica_batch_size(
    batch_size: int, input_context: tf.distribute.InputContext | None
) -> int:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if input_context is None:
        return batch_size
    if batch_size % input_context.num_replicas_in_sync:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by "
            f"{input_context.num_replicas_in_sync} replicas"
        )
    return input_context.get_per_replica_batch_size(batch_size)


def _cache(dataset: tf.data.Dataset, cache: bool | str) -> tf.data.Dataset:
    if not cache:
        return dataset
    # cache=True keeps it in memory; a string is a file prefix for an on-disk cache.
    return dataset.cache("" if cache is True else str(cache))


def train_dataset(
    records_dir: str,
    batch_size: int,
    *,
    image_size: int | Sequence[int] = (128, 128),
    augment: str = "fused",
    augment_strength: float = 1.0,
    seed: int | None = None,
    deterministic: bool = False,
    cache: bool | str = False,
    input_context: tf.distribute.InputContext | None = None,
    data_service_address: str | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    split: str = "train",
    data_service_mode: str = "parallel_epochs",
) -> tf.data.Dataset:
    """Shuffled, augmented training batches; one pass over the split per iteration.

    Not repeated: iterate it once per epoch (or ``.repeat()`` it). Each iteration
    reshuffles and re-samples the augmentation.

    Args:
      records_dir: Directory written by ``make_records`` (manifest + shards).
      batch_size: The *global* batch size. Without ``input_context`` every batch has
        this many examples; with one, each batch has
        ``input_context.get_per_replica_batch_size(batch_size)`` (the convention of
        ``strategy.distribute_datasets_from_function``).
      image_size: Output (height, width), or one int for a square.
      augment: One of ``AUGMENT_MODES`` (see the module docstring).
      augment_strength: Scales the augmentation ranges; 1.0 is the tuned default.
      seed: Seeds the file and record shuffles and the augmentation. With
        ``deterministic=True`` the same seed gives the same batches, run after run.
      deterministic: Keep element order fixed (slower: a slow element holds up the
        rest). Reproducibility also needs ``seed``.
      cache: True caches in memory, a string caches to that file prefix. With
        ``augment="fused"`` the serialized records are cached (the decode is the
        augmentation, so it runs every epoch); otherwise the decoded images are.
      input_context: From ``tf.distribute``; this worker then reads only its share of the
        shard files (by example, with a warning, if there are fewer files than workers).
      data_service_address: ``grpc://host:port`` of a tf.data service dispatcher; the
        pipeline then runs on the service's workers (see the build notes).
      shuffle_buffer: Records in the shuffle buffer.
      split: Which split to read.
      data_service_mode: ``"parallel_epochs"`` (every consumer gets a full pass) or
        ``"distributed_epoch"`` (the service splits one pass among consumers).

    Returns:
      A dataset of (uint8 [B, H, W, 3], int32 [B]) with static B (drop_remainder).

    Raises:
      ValueError: For a bad argument or a split without shards.
      FileNotFoundError: No manifest, or a listed shard is missing.
    """
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {augment!r}")
    if augment_strength < 0:
        raise ValueError(f"augment_strength must be >= 0, got {augment_strength}")
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    if data_service_mode not in DATA_SERVICE_MODES:
        raise ValueError(f"data_service_mode must be one of {DATA_SERVICE_MODES}")
    image_size = decode._size_pair(image_size)
    per_replica_batch = _per_replica_batch_size(batch_size, input_context)
    files, counts = list_shards(records_dir, split)
    max_ratio = max_dct_ratio(records_dir, image_size)
    logging.info(
        "train_dataset: %d shard(s) of %s, batch %d, image_size %s, augment=%s (strength %g), "
        "seed=%s, deterministic=%s",
        len(files),
        split,
        per_replica_batch,
        image_size,
        augment,
        augment_strength,
        seed,
        deterministic,
    )

    examples = _records(
        files,
        counts,
        training=True,
        deterministic=deterministic,
        seed=seed,
        input_context=input_context,
    )

    if augment == "fused":
        batches = _fused_images(
            examples,
            image_size,
            augment_strength,
            seed,
            deterministic,
            cache,
            shuffle_buffer,
            per_replica_batch,
            max_ratio,
        )
    else:
        images = examples.map(
            lambda encoded, height, width, label: (
                decode.decode_and_resize(encoded, image_size, height, width, max_ratio),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        images = _cache(images, cache)
        # Decoded 128x128 images are ~49 kB each; the shuffle still precedes the batch.
        images = images.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # drop_remainder: static batch shapes for XLA / TPU and equal per-replica batches.
        batches = images.batch(per_replica_batch, drop_remainder=True)
    if augment == "keras_cv":
        batches = batches.map(
            _keras_cv_batch_fn(augment_strength, seed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    batches = _maybe_distribute(batches, data_service_address, data_service_mode)
    batches = batches.with_options(_options(deterministic))
    # Prefetch once, last: overlaps producing batch n+1 with the consumer's step n.
    return batches.prefetch(tf.data.AUTOTUNE)


def _seeds(seed: int | None) -> tf.data.Dataset:
    # One stateless seed per element of the stream it is zipped with, drawn in stream
    # order: reproducible with a seed and deterministic order, and different every
    # iteration (epoch) thanks to rerandomize_each_iteration.
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _fused_images(
    examples: tf.data.Dataset,
    image_size: tuple[int, int],
    strength: float,
    seed: int | None,
    deterministic: bool,
    cache: bool | str,
    shuffle_buffer: int,
    batch_size: int,
    max_ratio: int,
) -> tf.data.Dataset:
    """Parsed examples -> shuffled, augmented batches (uint8 [B, H, W, 3], int32 [B]).

    One map per batch: the augmentation parameters (crop window, DCT ratio, flip, jitter)
    are sampled for the whole batch at once (vectorised), then a ``tf.map_fn`` inside the
    same map decodes each example's window (``decode.decode_augmented``). Per-element
    tf.data stages cost ~5-10 us per op and element, as much as decoding a small JPEG;
    the earlier chain (batch -> sample -> unbatch -> per-image map -> batch) paid that
    machinery per image, this one per batch (measured 0.50 -> 0.46 CPU ms per image on
    the 160-px records, see the build notes).
    """
    examples = _cache(examples, cache)
    # Shuffle the compact encoded bytes, not decoded pixels (more records per MB), and
    # before batching so every batch mixes shards and classes.
    examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    jitter = strength > 0

    def decode_batch(batch, batch_seed):
        encoded, heights, widths, labels = batch
        uniforms = tf.random.stateless_uniform(
            [tf.shape(encoded)[0], decode.NUM_UNIFORMS], batch_seed
        )
        params = decode.sample_augmentation(
            heights, widths, uniforms, image_size, strength, max_ratio
        )

        def decode_one(args):
            one_encoded, one_params = args
            return decode.decode_augmented(
                one_encoded, one_params, image_size, jitter=jitter, max_ratio=max_ratio
            )

        images = tf.map_fn(
            decode_one,
            (encoded, params),
            fn_output_signature=tf.TensorSpec([*image_size, 3], tf.uint8),
            # Sequential within a batch: batches already run in parallel across cores
            # (num_parallel_calls below), and extra loop threads measured no faster.
            parallel_iterations=1,
        )
        return images, labels

    # drop_remainder: static batch shapes for XLA / TPU and equal per-replica batches.
    return tf.data.Dataset.zip(examples.batch(batch_size, drop_remainder=True), _seeds(seed)).map(
        decode_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )


def _keras_cv_batch_fn(strength: float, seed: int | None):
    # Imported here: keras-cv is slow to import and only this mode needs it in tf.data.
    from pipeline import augment as augment_lib

    augmenter = augment_lib.make_augmenter(strength=strength, seed=seed)

    def apply(images, labels):
        augmented = augmenter(images, training=True)
        return augment_lib.to_uint8(augmented), labels

    return apply


def _maybe_distribute(dataset: tf.data.Dataset, address: str | None, mode: str) -> tf.data.Dataset:
    if not address:
        return dataset
    logging.info("tf.data service at %s, processing_mode=%s", address, mode)
    return dataset.apply(
        tf.data.experimental.service.distribute(processing_mode=mode, service=address)
    )


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Let tf.data's autotuner size the parallelism and buffers (the AUTOTUNE knobs above).
    options.autotune.enabled = True
    return options


def eval_dataset(
    records_dir: str,
    batch_size: int,
    *,
    split: str = "val",
    image_size: int | Sequence[int] = (128, 128),
    cache: bool | str = False,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Evaluation batches: fixed order, no augmentation, every example exactly once.

    The last partial batch is kept (so the batch dimension is not static). With
    ``input_context`` each worker sees its own disjoint share; together they cover the
    split once. ``batch_size`` is global, as in ``train_dataset``.

    Returns:
      A dataset of (uint8 [B, H, W, 3], int32 [B]).

    Raises:
      ValueError, FileNotFoundError: As ``train_dataset``.
    """
    image_size = decode._size_pair(image_size)
    per_replica_batch = _per_replica_batch_size(batch_size, input_context)
    files, counts = list_shards(records_dir, split)
    max_ratio = max_dct_ratio(records_dir, image_size)
    logging.info(
        "eval_dataset: %d shard(s) of %s, batch %d, image_size %s",
        len(files),
        split,
        per_replica_batch,
        image_size,
    )
    records = _records(
        files, counts, training=False, deterministic=True, seed=None, input_context=input_context
    )
    images = records.map(
        lambda encoded, height, width, label: (
            decode.decode_and_resize(encoded, image_size, height, width, max_ratio),
            label,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    images = _cache(images, cache)
    batches = images.batch(per_replica_batch, drop_remainder=False)
    return batches.with_options(_options(True)).prefetch(tf.data.AUTOTUNE)


def build_dataset(
    records_dir: str, split: str, batch_size: int, *, training: bool, **kwargs: Any
) -> tf.data.Dataset:
    """``train_dataset`` when ``training`` else ``eval_dataset``, for ``split``.

    Keyword arguments are passed through; ones the chosen mode does not take raise
    ``TypeError``.
    """
    if training:
        return train_dataset(records_dir, batch_size, split=split, **kwargs)
    return eval_dataset(records_dir, batch_size, split=split, **kwargs)
