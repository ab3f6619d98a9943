"""Tests for trainer/plots.py's pictures: what each one shows (panels, titles, cell texts,
the tiles' pixels, the curves' points), read from the saved figure, and that the PNG
written holds it (a cell's colour read back from the file)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainer import plots


def _png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _pixel_at(figure, axes, png: np.ndarray, x: float, y: float) -> np.ndarray:
    """The PNG's pixel at data point (x, y) of ``axes`` (plots save at 100 dpi, untrimmed)."""
    scale = 100 / figure.dpi
    column, row = axes.transData.transform((x, y)) * scale
    return png[png.shape[0] - 1 - int(round(row)), int(round(column))]


def test_confusion_matrix_shows_counts_row_shares_and_an_empty_row(tmp_path, saved_figures):
    path = plots.plot_confusion(
        [[5, 1], [0, 0]], ["cat", "dog"], str(tmp_path / "c.png"), title="val: 5/6"
    )
    figure = saved_figures[path]
    (axes,) = figure.axes
    assert axes.get_title() == "val: 5/6"
    assert axes.get_xlabel() == "predicted" and axes.get_ylabel() == "true (examples)"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["cat", "dog"]
    # Each true class with its number of examples; the empty row says 0 and shows 0%.
    assert [t.get_text() for t in axes.get_yticklabels()] == ["cat\n(6)", "dog\n(0)"]
    assert sorted(t.get_text() for t in axes.texts) == sorted(
        ["5\n83.3%", "1\n16.7%", "0\n0.0%", "0\n0.0%"]
    )
    np.testing.assert_allclose(axes.images[0].get_array(), [[5 / 6, 1 / 6], [0, 0]])

    # The file shows it: the 83% cell dark blue, the empty row's cells white (sampled
    # off-centre, away from the cell's text).
    png = _png(path)
    dark = _pixel_at(figure, axes, png, -0.35, -0.35)
    white = _pixel_at(figure, axes, png, 0.35, 1.35)
    assert dark[2] > dark[0] + 80 and dark.sum() < 450
    assert (white > 240).all()


def test_confusion_matrix_has_a_default_title(tmp_path, saved_figures):
    path = plots.plot_confusion([[1, 0], [0, 1]], ["cat", "dog"], str(tmp_path / "c.png"))
    assert saved_figures[path].axes[0].get_title() == "confusion matrix"


def _mistakes(tmp_path, count: int):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 24, 24, 3), dtype=np.uint8)
    path = plots.plot_mistakes(
        images,
        [f"train/cat.{i}.jpg" for i in range(count)],
        np.zeros(count, int),
        np.linspace(0.9, 0.99, count),
        ["cat", "dog"],
        str(tmp_path / f"{count}.png"),
    )
    return images, path


def test_mistakes_grid_shows_each_image_with_its_name_label_and_probability(
    tmp_path, saved_figures
):
    images, path = _mistakes(tmp_path, 6)
    figure = saved_figures[path]
    # Up to 4 tiles a row: 6 mistakes take two rows of 4, the last two tiles blank.
    assert len(figure.axes) == 8
    shown = [axes for axes in figure.axes if axes.images]
    assert len(shown) == 6
    assert not any(axes.images for axes in figure.axes[6:])
    for index, axes in enumerate(shown):
        np.testing.assert_array_equal(axes.images[0].get_array(), images[index])
        name, verdict = axes.get_title().split("\n")
        assert name == f"train/cat.{index}.jpg"
        assert verdict == f"true cat, P(dog) {np.linspace(0.9, 0.99, 6)[index]:.3f}"
    assert figure.get_suptitle() == "6 most confident mistakes"
    width, height = figure.get_size_inches()
    assert _png(path).shape[:2] == (round(height * 100), round(width * 100))


def test_mistakes_grid_without_mistakes_says_so(tmp_path, saved_figures):
    _, path = _mistakes(tmp_path, 0)
    figure = saved_figures[path]
    (axes,) = figure.axes
    assert not axes.images
    assert [t.get_text() for t in axes.texts] == ["no mistakes"]
    assert figure.get_suptitle() == "0 most confident mistakes"


def test_history_plot_has_a_loss_and_an_accuracy_panel_with_train_and_val_curves(
    tmp_path, saved_figures
):
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "loss": [0.7, 0.5, 0.4],
            "accuracy": [0.5, 0.7, 0.8],
            "val_loss": [0.69, 0.6, 0.55],
            "val_accuracy": [0.52, 0.66, 0.71],
        }
    )
    history.to_csv(tmp_path / "history.csv", index=False)
    path = plots.plot_history(str(tmp_path / "history.csv"), str(tmp_path / "curves.png"))
    figure = saved_figures[path]
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy"]
    for axes, metric in zip(figure.axes, ("loss", "accuracy")):
        assert axes.get_xlabel() == "epoch"
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert set(lines) == {"train", "val"}
        for label, column in (("train", metric), ("val", f"val_{metric}")):
            # Epochs are shown counting from 1.
            np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2, 3])
            np.testing.assert_allclose(lines[label].get_ydata(), history[column])


def test_history_plot_without_validation_has_only_the_train_curves(tmp_path, saved_figures):
    pd.DataFrame({"epoch": [0], "loss": [0.7], "accuracy": [0.5]}).to_csv(
        tmp_path / "history.csv", index=False
    )
    path = plots.plot_history(str(tmp_path / "history.csv"), str(tmp_path / "curves.png"))
    for axes in saved_figures[path].axes:
        assert [line.get_label() for line in axes.get_lines()] == ["train"]


def test_history_without_epochs_is_refused(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,accuracy\n")
    with pytest.raises(ValueError, match="has no epochs to plot"):
        plots.plot_history(str(tmp_path / "history.csv"), str(tmp_path / "curves.png"))
