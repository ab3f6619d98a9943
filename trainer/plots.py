"""The training-curves PNG (loss and accuracy, train vs val, per epoch)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # No display on servers; must be set before pyplot is imported.
import matplotlib.pyplot as plt  # noqa: E402
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
