"""Tests for pipeline/decode_once.py on tiny records: decoded once, shuffled, memory-checked."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from pipeline import decode_once
from records.manifest import Manifest


def test_side_and_memory_estimate():
    assert decode_once.decoded_side(128, augment=True) == 144
    assert decode_once.decoded_side(128, augment=False) == 128
    # The full Kaggle train set at 144x144x3: the issue's ~1.5 GB.
    assert decode_once.estimate_bytes(25_000, 144) == 1_555_200_000
    assert decode_once.available_bytes() > 0


def test_check_fits_stops_with_the_flag_to_use_instead():
    with pytest.raises(ValueError) as error:
        decode_once.check_fits(25_000, 144, available=1_000_000_000)
    message = str(error.value)
    assert "~1.56 GB" in message and "25000 images at 144x144x3" in message
    assert "0.80 GB allowed" in message and "MemAvailable" in message
    assert "--input_mode=stream" in message and "--decode_once_max_gb" in message
    assert decode_once.check_fits(25_000, 144, available=4_000_000_000) == 1_555_200_000
    # The flag overrides the available-memory default, both ways.
    assert decode_once.check_fits(25_000, 144, max_gb=2.0, available=1) == 1_555_200_000
    with pytest.raises(ValueError, match="--decode_once_max_gb=1"):
        decode_once.check_fits(25_000, 144, max_gb=1.0, available=10**12)


def _epoch(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def _fingerprints(images):
    return sorted(hashlib.sha256(image.tobytes()).hexdigest() for image in images)


def test_accelerator_placement_yields_every_stored_image_once_per_epoch(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    dataset = decode_once.train_dataset(manifest, 8, image_size=32, placement="accelerator", seed=1)
    first_images, first_labels = _epoch(dataset)
    assert first_images.shape == (24, 36, 36, 3) and first_images.dtype == np.uint8
    assert sorted(first_labels.tolist()) == [0] * 12 + [1] * 12
    # Decoded once: with the shards gone, the next epoch still comes (from the cache),
    # the same images in another order.
    for path in manifest.split("train").paths:
        tf.io.gfile.remove(path)
    second_images, _ = _epoch(dataset)
    assert _fingerprints(second_images) == _fingerprints(first_images)
    assert not np.array_equal(second_images, first_images)


def test_host_placement_augments_every_batch(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    dataset = decode_once.train_dataset(
        manifest, 8, image_size=32, placement="host", seed=1, deterministic=True
    )
    first, labels = _epoch(dataset)
    assert first.shape == (24, 32, 32, 3) and first.dtype == np.uint8
    assert sorted(labels.tolist()) == [0] * 12 + [1] * 12
    again, _ = _epoch(dataset)
    assert not np.array_equal(np.sort(first, axis=0), np.sort(again, axis=0))  # fresh crops
    # The same seed and deterministic order reproduce the batches.
    repeat = decode_once.train_dataset(
        manifest, 8, image_size=32, placement="host", seed=1, deterministic=True
    )
    np.testing.assert_array_equal(_epoch(repeat)[0], first)


def test_without_augmentation_images_are_stored_at_the_output_size(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    images, _ = _epoch(
        decode_once.train_dataset(
            manifest, 8, image_size=32, placement="accelerator", augment=False
        )
    )
    assert images.shape == (24, 32, 32, 3)


def test_memory_check_runs_before_decoding(tiny_records):
    # Raised while the dataset is built: nothing has been decoded yet.
    with pytest.raises(ValueError, match="needs ~0.00 GB .* 24 images at 36x36x3"):
        decode_once.train_dataset(Manifest.load(str(tiny_records)), 8, image_size=32, max_gb=1e-6)


def test_each_input_pipeline_decodes_its_share(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        images, _ = _epoch(
            decode_once.train_dataset(
                manifest, 8, image_size=32, placement="accelerator", input_context=context
            )
        )
        assert images.shape == (12, 36, 36, 3)  # one shard of 12 each, batches of 4
        seen.append(set(_fingerprints(images)))
    assert not seen[0] & seen[1]


def test_bad_placement():
    with pytest.raises(ValueError, match="placement='gpu'"):
        decode_once.train_dataset(None, 8, placement="gpu")
