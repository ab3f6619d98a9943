"""Tests for trainer/training/show_batch.py and the `preview` command."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import run_command
from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer.preview import PreviewConfig
from trainer.training import show_batch

TILE_PX = round(show_batch.TILE_INCHES * show_batch.DPI)


def preview_config(records_dir, output, **overrides) -> PreviewConfig:
    settings = dict(
        records_dir=str(records_dir),
        output=str(output),
        batch_size=8,
        image_size=32,
        seed=3,
        deterministic=True,
        columns=4,
    )
    return PreviewConfig(**{**settings, **overrides})


@pytest.mark.parametrize("augment", ["fused", "none"])
def test_picture_is_the_pipelines_first_batch_with_its_labels(tiny_records, tmp_path, augment):
    config = preview_config(tiny_records, tmp_path / "batch.png", augment=augment)
    picture = show_batch.write_batch_picture(config, config.output, config.columns)

    # The same batch straight from the pipeline, seeded as train seeds a run.
    manifest = Manifest.load(str(tiny_records))
    keras.utils.set_random_seed(3)
    images, labels = next(
        iter(
            dataset_lib.train_dataset(
                manifest,
                8,
                image_size=32,
                augment=augment,
                seed=3,
                deterministic=True,
            )
        )
    )
    assert picture.labels == tuple(manifest.class_names[i] for i in labels.numpy())
    assert set(picture.labels) <= {"cat", "dog"}
    replayed, _ = show_batch.first_training_batch(config, manifest)
    np.testing.assert_array_equal(replayed, images.numpy())

    assert (picture.rows, picture.columns) == (2, 4)
    with Image.open(tmp_path / "batch.png") as png:
        assert png.format == "PNG"
        assert png.size == (4 * TILE_PX, 2 * TILE_PX)


def test_titles_are_the_labels_and_the_grid_fits_the_batch(tmp_path):
    images = np.zeros((5, 32, 32, 3), np.uint8)
    labels = np.array([0, 1, 1, 0, 1])
    picture = show_batch.plot_batch(images, labels, ("cat", "dog"), str(tmp_path / "p.png"), 3)
    assert picture.labels == ("cat", "dog", "dog", "cat", "dog")
    assert (picture.rows, picture.columns) == (2, 3)
    with Image.open(tmp_path / "p.png") as png:
        assert png.size == (3 * TILE_PX, 2 * TILE_PX)


@pytest.mark.slow
def test_preview_command(tiny_records, tmp_path):
    output = tmp_path / "out" / "batch.png"
    result = run_command(
        "trainer.preview",
        f"--records_dir={tiny_records}",
        f"--output={output}",
        "--batch_size=8",
        "--image_size=32",
        "--seed=1",
        # train's flags work as they are, --model_dir included.
        f"--model_dir={tmp_path / 'model'}",
        "--backbone=small_cnn",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {output}: 8 training images" in result.stdout
    assert output.is_file() and not (tmp_path / "model").exists()


def test_preview_command_missing_records(tmp_path):
    result = run_command(
        "trainer.preview", f"--records_dir={tmp_path / 'nothing'}", f"--output={tmp_path / 'b.png'}"
    )
    assert result.returncode == 2
    assert "make_records" in result.stderr and "Traceback" not in result.stderr


def test_augmentation_in_the_model_is_shown_too(tiny_records):
    # --augment=keras_cv_model: the pipeline only decodes and the trainer's model runs the
    # keras-cv layers first; the picture must show their output, not the plain decode.
    config = preview_config(tiny_records, "unused.png", augment="keras_cv_model")
    manifest = Manifest.load(str(tiny_records))
    shown, labels = show_batch.first_training_batch(config, manifest)
    keras.utils.set_random_seed(3)
    plain, plain_labels = next(
        iter(
            dataset_lib.train_dataset(
                manifest, 8, image_size=32, augment="none", seed=3, deterministic=True
            )
        )
    )
    np.testing.assert_array_equal(labels, plain_labels.numpy())
    assert shown.dtype == np.uint8 and shown.shape == (8, 32, 32, 3)
    assert not np.array_equal(shown, plain.numpy())
