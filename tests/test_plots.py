"""Tests for trainer/plots.py's evaluate pictures: they are written, as PNG images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from trainer import plots


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_confusion_matrix_picture_even_with_an_empty_row(tmp_path):
    path = plots.plot_confusion([[5, 1], [0, 0]], ["cat", "dog"], str(tmp_path / "c.png"))
    width, height = _png_size(path)
    assert width > 200 and height > 200


def test_mistakes_grid_grows_with_the_count_and_says_when_there_are_none(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    names = [f"train/cat.{i}.jpg" for i in range(6)]

    def grid(count, name):
        return _png_size(
            plots.plot_mistakes(
                images[:count],
                names[:count],
                np.zeros(count, int),
                np.full(count, 0.9),
                ["cat", "dog"],
                str(tmp_path / name),
            )
        )

    none, two, six = grid(0, "0.png"), grid(2, "2.png"), grid(6, "6.png")
    # Up to 4 tiles a row: 6 mistakes take two rows, so the picture is taller.
    assert six[1] > two[1] and six[0] > two[0] > 0 and none[0] > 0
