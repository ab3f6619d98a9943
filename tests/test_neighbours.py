"""Tests for trainer/audit/neighbours.py: near-duplicates by features and by thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline import decode
from trainer.audit import features, neighbours

# The audit decodes at 224; 64 keeps every 16x16 thumbnail cell 4 pixels wide.
DECODE_SIZE = (64, 64)


def picture(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like uint8 picture: a few smooth blobs of colour (a 4x4 grid, upscaled)."""
    grid = np.random.default_rng(seed).integers(0, 256, (4, 4, 3)).astype(np.float32)
    image = tf.image.resize(grid[None], (height, width), method="bicubic")[0]
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def resized_copy(image: np.ndarray, height: int, width: int) -> bytes:
    """``image`` squashed or stretched to ``height`` x ``width``, saved again at quality 75."""
    resized = tf.image.resize(image.astype(np.float32), (height, width), antialias=True)
    return jpeg(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy(), 75)


def eval_decoded(encoded: list[bytes]) -> np.ndarray:
    """The pixels the audit's base sees: the eval decode (``eval_dataset``'s) of each JPEG."""
    return np.stack(
        [decode.decode_and_resize(tf.constant(e), DECODE_SIZE).numpy() for e in encoded]
    )


def test_a_squashed_or_stretched_copy_is_paired_and_different_pictures_are_not():
    sizes = [(96, 128), (120, 80), (100, 100), (90, 160), (128, 96), (72, 96)]
    originals = [picture(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    encoded = [jpeg(image) for image in originals] + [
        resized_copy(originals[0], 24, 24),  # 4:3 squashed to a small square
        resized_copy(originals[1], 60, 150),  # 2:3 stretched to 5:2
    ]
    names = tuple(f"img.{i}.jpg" for i in range(len(encoded)))
    splits = ("train",) * 7 + ("val",)
    # Features that pair nothing (what the base gives a copy it sees blurred and upscaled).
    vectors = np.random.default_rng(0).normal(size=(len(encoded), 32))
    near = neighbours.nearest(vectors, 3)
    assert neighbours.duplicates(near, splits, names).pairs == ()
    found = neighbours.duplicates(
        near,
        splits,
        names,
        vectors=vectors,
        thumbnails=features.thumbnails(eval_decoded(encoded)),
    )
    assert {(i, j) for i, j, _ in found.pairs} == {(0, 6), (1, 7)}
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    # Each pair is ranked by its features' similarity, the one scale of duplicates.csv.
    for i, j, similarity in found.pairs:
        assert similarity == pytest.approx(float(unit[i] @ unit[j]), abs=1e-5)
    # The val copy stays (no train/val leak); the train one gives way to it.
    assert found.keep_instead.tolist() == [-1, 7, -1, -1, -1, -1, 0, -1]


def test_a_pair_found_by_both_signals_keeps_its_feature_similarity():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(5, 16))
    vectors[1] = vectors[0] + rng.normal(0, 0.01, 16)  # 0 ~ 1 by features
    thumbnails = rng.normal(size=(5, 8))
    thumbnails[1] = thumbnails[0]  # and by thumbnails
    thumbnails[3] = thumbnails[2]  # 2 ~ 3 by thumbnails only
    near = neighbours.nearest(vectors, 2)
    by_features = neighbours.duplicates(near, ("train",) * 5, tuple("abcde"))
    found = neighbours.duplicates(
        near, ("train",) * 5, tuple("abcde"), vectors=vectors, thumbnails=thumbnails
    )
    assert by_features.pairs[0] == found.pairs[0] and found.pairs[0][:2] == (0, 1)
    assert [p[:2] for p in found.pairs] == [(0, 1), (2, 3)]


def test_thumbnails_need_the_vectors_of_the_same_images():
    near = neighbours.nearest(np.eye(4), 2)
    with pytest.raises(ValueError, match="thumbnails need the feature vectors"):
        neighbours.duplicates(near, ("train",) * 4, tuple("abcd"), thumbnails=np.eye(4))
    with pytest.raises(ValueError, match="one row of each per image"):
        neighbours.duplicates(
            near, ("train",) * 4, tuple("abcd"), vectors=np.eye(4), thumbnails=np.eye(3)
        )
