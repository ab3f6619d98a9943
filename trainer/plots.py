"""The pictures: training curves, and evaluate's confusion matrix and mistakes grid."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # No display on servers; must be set before pyplot is imported.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_history(history_csv: str, output_png: str) -> str:
    """Plots the Keras CSVLogger history in `history_csv` to `output_png`.

    Raises:
      ValueError: If the history has no rows.
    """
    history = pd.read_csv(history_csv)
    if history.empty:
        raise ValueError(f"{history_csv} has no epochs to plot")
    epochs = history["epoch"] + 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            column = prefix + metric
            if column in history:
                ax.plot(epochs, history[column], style, label=prefix.rstrip("_") or "train")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(output_png, dpi=100)
    plt.close(fig)
    return output_png


def plot_confusion(confusion, class_names, output_png: str, title: str = "") -> str:
    """The confusion matrix as a picture: counts and row percentages in each cell.

    Args:
      confusion: [K, K] counts, rows = true class, columns = predicted class.
      class_names: The K class names, in label order.
      output_png: Where to write it.
      title: Above the matrix (e.g. the split and the accuracy).

    Returns:
      ``output_png``.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    # Row percentages: how each true class is predicted (a row with no examples is 0%).
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        share = shares[row, column]
        ax.text(
            column,
            row,
            f"{count}\n{100 * share:.1f}%",
            ha="center",
            va="center",
            color="white" if share > 0.5 else "black",
        )
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, [f"{name}\n({total})" for name, total in zip(class_names, totals[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (examples)")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(output_png, dpi=100)
    plt.close(fig)
    return output_png


def plot_mistakes(
    images, filenames, labels, prob_dog, class_names, output_png: str, title: str = ""
) -> str:
    """A grid of mistakes, each tile titled with its file name, true label and P(dog).

    Args:
      images: uint8 [n, H, W, 3], as the model saw them.
      filenames: The n source names (as stored in the records' ``image/filename``).
      labels: The n true labels.
      prob_dog: The n P(dog).
      class_names: Class names in label order.
      output_png: Where to write it.
      title: Above the grid.

    Returns:
      ``output_png`` (with a "no mistakes" note when n is 0).
    """
    # The whole stored name: it is how a user finds the original photo.
    titles = [
        f"{name}\ntrue {class_names[label]}, P(dog) {p:.3f}"
        for name, label, p in zip(filenames, labels, prob_dog)
    ]
    image_grid(
        images,
        titles,
        output_png,
        columns=4,
        title=title or f"{len(images)} most confident mistakes",
        empty_note="no mistakes",
    )
    return output_png


def image_grid(
    images,
    titles,
    output_png: str,
    columns: int = 4,
    title: str = "",
    empty_note: str = "",
) -> str:
    """Images in a grid, ``columns`` a row, each with its (multi-line) title.

    Used for evaluate's mistakes and the label audit's suspects.

    Args:
      images: uint8 [n, H, W, 3].
      titles: n titles.
      output_png: Where to write it.
      columns: Tiles per row (fewer when there are fewer images).
      title: Above the grid, if any.
      empty_note: Written in the picture when there are no images.

    Returns:
      ``output_png``.
    """
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, tile_title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(tile_title, fontsize=8)
    if count == 0 and empty_note:
        axes[0, 0].text(0.5, 0.5, empty_note, ha="center", va="center")
    if title:
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the suptitle
    else:
        fig.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.3)
    fig.savefig(output_png, dpi=100)
    plt.close(fig)
    return output_png
