"""Decode-once training input: every record decoded once, kept in memory, cropped per batch.

The streaming chain (``pipeline.dataset.train_dataset``) decodes every image in every
epoch, because there the decode *is* the augmentation (a fresh crop window each time).
For a data set that fits in host memory this mode decodes each record once into a
fixed-size uint8 array and from then on only crops, flips and jitters (``pipeline.
crop_augment``): on the host as batched ops (``placement="host"``) or on the
accelerator as the model's first layer (``"accelerator"``; the pipeline then only
shuffles and batches)::

  shards -> this worker's files -> parse -> decode whole image to S x S uint8 (once)
  -> cache in memory -> shuffle (whole split) -> batch(drop_remainder)
  -> (host) crop/flip/jitter the batch -> prefetch

Stored size S (``decoded_side``): 9/8 of the output size, 144 for 128. Crops keep
35%..100% of the area, so their sides span 0.59..1.0 of S: 85..144 px for S = 144, the
mean crop (0.82 S = 118 px) lands near the 128-px output, and the largest are
downscaled rather than upscaled. Storing at 128 would upscale every crop but the full
image; 160 costs 23% more memory (25,000 images: 1.92 GB instead of 1.56 GB) for crops
that are mostly downscaled anyway. Images are stored squashed to a square (aspect not
kept), as the eval decode resizes them.

The cache is tf.data's in-memory ``cache()`` of single decoded images, filled by the
first pass: the shuffle buffer and the cache hold references to the same tensors, so
memory is one copy of the array (``estimate_bytes``). ``check_fits`` compares that with
the memory available before anything is decoded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from pipeline import crop_augment, dataset, decode, shards
from records.manifest import Manifest

INPUT_MODES: tuple[str, ...] = ("stream", "decode_once")
PLACEMENTS: tuple[str, ...] = ("host", "accelerator")
# Stored side over output side (see the module docstring).
STORED_SCALE = 9 / 8
# Share of MemAvailable the cache may take by default: the rest is for the model, the
# framework and the records read while decoding.
DEFAULT_MEMORY_FRACTION = 0.8
# Records decoded together in the one-time decode.
_DECODE_BATCH = 256


def decoded_side(image_size: int | Sequence[int], augment: bool) -> int:
    """Side of the stored square images: room for crops when augmenting, else the output."""
    side = max(decode.size_pair(image_size))
    return math.ceil(side * STORED_SCALE) if augment else side


def estimate_bytes(num_images: int, side: int) -> int:
    """Memory the decoded images take: ``num_images * side * side * 3`` bytes of uint8."""
    return num_images * side * side * 3


def available_bytes() -> int | None:
    """MemAvailable (Linux /proc/meminfo), else free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(
    num_images: int, side: int, max_gb: float | None = None, available: int | None = None
) -> int:
    """Raises ValueError, naming what to use instead, when the decoded images will not fit.

    Args:
      num_images: Images this host decodes.
      side: ``decoded_side``.
      max_gb: The limit in GB (``--decode_once_max_gb``); default
        ``DEFAULT_MEMORY_FRACTION`` of the available memory.
      available: Bytes available (default ``available_bytes()``), for tests.

    Returns:
      The estimated bytes.
    """
    needed = estimate_bytes(num_images, side)
    if max_gb is not None:
        limit, source = max_gb * 1e9, f"--decode_once_max_gb={max_gb:g}"
    else:
        available = available_bytes() if available is None else available
        if available is None:
            logging.warning("cannot tell the free memory; decode_once needs ~%.2f GB", needed / 1e9)
            return needed
        limit = DEFAULT_MEMORY_FRACTION * available
        source = (
            f"{DEFAULT_MEMORY_FRACTION:.0%} of the {available / 1e9:.2f} GB available "
            "(MemAvailable)"
        )
    if needed > limit:
        raise ValueError(
            f"--input_mode=decode_once needs ~{needed / 1e9:.2f} GB of host memory for "
            f"{num_images} images at {side}x{side}x3 uint8 (counted from the manifest), more "
            f"than the {limit / 1e9:.2f} GB allowed ({source}); use --input_mode=stream "
            "(decodes each batch from the records, memory independent of the data size), or "
            "raise --decode_once_max_gb if more memory is really free"
        )
    logging.info(
        "decode_once: %d images at %dx%dx3 uint8 = %.2f GB (limit %.2f GB, %s)",
        num_images,
        side,
        side,
        needed / 1e9,
        limit / 1e9,
        source,
    )
    return needed


def train_dataset(
    manifest: Manifest,
    batch_size: int,
    *,
    split: str = "train",
    image_size: int | Sequence[int] = (128, 128),
    placement: str = "host",
    augment: bool = True,
    augment_strength: float = 1.0,
    seed: int | None = None,
    deterministic: bool = False,
    max_gb: float | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Shuffled training batches from images decoded once; one pass per iteration.

    Iterate the same dataset object every epoch (``.repeat()`` it): the in-memory cache
    belongs to it, filled by the first pass, whose first batch waits for the whole decode.

    Args:
      manifest: The records directory's manifest.
      batch_size: Global batch size (per-replica with ``input_context``, as
        ``pipeline.dataset.train_dataset``).
      split: Which split.
      image_size: Output (height, width) of the host augmentation, or of the
        accelerator-side layer (``crop_augment.DecodedCropAugment``).
      placement: "host": batches are augmented here, uint8 [B, H, W, 3]. "accelerator":
        batches are the stored images, uint8 [B, S, S, 3], for the model's first layer.
      augment: False stores the images at the output size and only shuffles.
      augment_strength: As in ``train_dataset``.
      seed: Seeds the shuffle and the host augmentation.
      deterministic: Fixed element order.
      max_gb: Memory limit (``check_fits``).
      input_context: This worker decodes and holds only its share of the shard files.

    Raises:
      ValueError: Bad placement, or the images would not fit in memory.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: expected one of {', '.join(PLACEMENTS)}")
    image_size = decode.size_pair(image_size)
    per_replica_batch = shards.per_replica_batch_size(batch_size, input_context)
    split_info = manifest.split(split)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    num_images = math.ceil(split_info.num_examples / num_pipelines)
    side = decoded_side(image_size, augment)
    check_fits(num_images, side, max_gb)
    examples = shards.read_examples(
        split_info.paths,
        split_info.counts,
        training=False,
        deterministic=True,
        seed=None,
        input_context=input_context,
    )
    max_ratio = decode.max_useful_ratio(manifest.max_short_side, (side, side))
    images = (
        examples.batch(_DECODE_BATCH)
        .map(
            lambda encoded, heights, widths, labels: (
                decode.decode_and_resize_batch(encoded, heights, widths, side, max_ratio),
                labels,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .unbatch()
        # Single images, so the whole split can be reshuffled each epoch; the shuffle
        # buffer refers to the cached tensors, it does not copy them.
        .cache()
        .shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
        .batch(per_replica_batch, drop_remainder=True)
    )
    if augment and placement == "host":
        images = tf.data.Dataset.zip(images, dataset.batch_seeds(seed)).map(
            lambda batch, batch_seed: (
                crop_augment.augment_batch(batch[0], batch_seed, image_size, augment_strength),
                batch[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    return images.with_options(dataset.options(deterministic)).prefetch(tf.data.AUTOTUNE)
