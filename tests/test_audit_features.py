"""Tests for trainer/audit/features.py: the thumbnails beside the base's features, cached.

(``tests/test_features.py`` is ``trainer/training/features.py``'s; the vectors' alignment
with names across shards is tested in ``tests/test_labels.py``.)
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import make_jpeg_bytes, write_records
from records.manifest import Manifest
from trainer.audit import features

SIZE = (32, 32)


def test_thumbnails_ignore_brightness_and_contrast_and_flat_images_match_nothing():
    rng = np.random.default_rng(0)
    # Two pictures: a gradient across, and one down, each with a dark band.
    across = np.linspace(0, 1, 48)[None, :] ** 2 * np.ones((32, 1))
    down = np.linspace(1, 0, 32)[:, None] * np.ones((1, 48))
    pictures = np.stack([40 + 160 * across, 40 + 160 * down])[..., None].repeat(3, axis=-1)
    pictures[:, 10:14] = 20
    image = pictures.astype(np.uint8)
    # Half the contrast, much brighter: the same picture.
    brighter = (pictures * 0.5 + 100).astype(np.uint8)
    thumbs = features.thumbnails(image)
    assert thumbs.shape == (2, features.THUMBNAIL_SIZE**2) and thumbs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(thumbs, axis=1), 1, atol=1e-5)
    assert np.sum(thumbs * features.thumbnails(brighter), axis=1) == pytest.approx(1, abs=1e-3)
    assert thumbs[0] @ thumbs[1] < 0.5
    # A near-flat image (a grey frame with a JPEG's +-1 of noise) is no picture: zeros, so
    # two of them are never paired by chance.
    flat = 128 + rng.integers(-1, 2, (1, 32, 48, 3)).astype(np.uint8)
    assert not features.thumbnails(flat).any()


def test_extract_gives_each_record_the_thumbnail_of_its_own_pixels_and_caches_it(tmp_path):
    examples = {
        split: [
            (make_jpeg_bytes(40 + 8 * (i % 3), 64, seed=seed + i), i % 2, f"img.{seed + i}.jpg")
            for i in range(count)
        ]
        for split, count, seed in (("train", 9, 0), ("val", 5, 100))
    }
    write_records(tmp_path / "records", examples, num_shards=2)
    manifest = Manifest.load(str(tmp_path / "records"))
    inputs = keras.Input((*SIZE, 3))
    mean_colour = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    found = features.extract(manifest, mean_colour, batch_size=4, progress=False)
    assert found.thumbnails.shape == (14, features.THUMBNAIL_SIZE**2)
    # The decode-only pass finds each row's pixels again: its thumbnail is of those.
    rows = list(zip(found.splits, found.positions.tolist()))
    expected = features.thumbnails(np.stack(features.images_at(manifest, SIZE, rows)))
    np.testing.assert_allclose(found.thumbnails, expected, atol=1e-6)

    path = str(tmp_path / "features.npz")
    features.save(found, path, "key")
    np.testing.assert_array_equal(features.load(path, "key").thumbnails, found.thumbnails)
    # A cache written before thumbnails existed is recomputed, not read without them.
    older = ("vectors", "labels", "filenames", "splits", "positions")
    np.savez(path, key="key", **{name: np.asarray(getattr(found, name)) for name in older})
    assert features.load(path, "key") is None


@pytest.mark.slow
def test_the_base_pass_on_litert_gives_keras_vectors(tiny_records, tmp_path, litert_images):
    manifest = Manifest.load(str(tiny_records))
    keras.utils.set_random_seed(0)
    base = features.extractor("vgg16", "none", SIZE)
    by_keras = features.extract(manifest, base, batch_size=5, progress=False, engine="keras")
    by_litert = features.extract(
        manifest, base, batch_size=5, progress=False, engine="litert", cache_dir=str(tmp_path)
    )
    assert sum(litert_images) == 1 + 24 + 12
    assert by_litert.filenames == by_keras.filenames
    np.testing.assert_allclose(by_litert.vectors, by_keras.vectors, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(by_litert.thumbnails, by_keras.thumbnails)
    assert list(tmp_path.glob("litert_float32_*.tflite"))
