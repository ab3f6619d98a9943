"""One training batch as a picture: what the model sees, each tile titled with its label.

Like fastai's ``show_batch``: a quick look that the labels match the pictures and that
the augmentation leaves a recognisable cat or dog. The batch comes from the trainer's own
input code (``trainer.training.data.train_pipeline`` and, for augmentation on the accelerator,
``trainer.training.data.model_augmenter``) with ``train``'s seeding, so with ``seed`` and
``deterministic`` set it is exactly the first batch ``train`` fits on.
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf

from records.manifest import Manifest
from trainer.training.config import TrainConfig
from trainer.training.data import model_augmenter, train_pipeline

# Each tile is TILE_INCHES square at DPI: 150 x 150 pixels, whatever the image size.
TILE_INCHES = 1.5
DPI = 100


@dataclasses.dataclass(frozen=True)
class BatchPicture:
    """What ``write_batch_picture`` drew.

    Attributes:
      path: The PNG.
      labels: Each tile's class name, row by row (the batch's order).
      rows: Rows of tiles.
      columns: Tiles per row.
    """

    path: str
    labels: tuple[str, ...]
    rows: int
    columns: int


def first_training_batch(config: TrainConfig, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The first batch ``train`` would fit on: (uint8 [B, H, W, 3] images, int [B] labels).

    Seeded as ``fit.train`` seeds a run. Augmentation that ``train`` runs in the model
    (``--augment=keras_cv_model``, decode-once crops on the accelerator) is applied here
    too, in training mode, so the picture is what the network's first layer receives.
    """
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    images, labels = next(iter(train_pipeline(config, manifest)))
    augmenter = model_augmenter(config)
    if augmenter is not None:
        images = augmenter.layer(images, training=True)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return images, np.asarray(labels).astype(np.int64)


def plot_batch(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    output_png: str,
    columns: int = 8,
) -> BatchPicture:
    """Draws ``images`` in a grid, ``columns`` per row, each titled with its class name."""
    import matplotlib

    matplotlib.use("Agg")  # No display on servers; must be set before pyplot is imported.
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    names = tuple(class_names[int(label)] for label in labels)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(columns * TILE_INCHES, rows * TILE_INCHES),
        dpi=DPI,
        squeeze=False,
    )
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(images):
            ax.imshow(images[index])
            ax.set_title(names[index], fontsize=10, pad=2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.05, hspace=0.25)
    os.makedirs(os.path.dirname(os.path.abspath(output_png)), exist_ok=True)
    # No bbox_inches="tight": the PNG is exactly columns x rows tiles of TILE_INCHES * DPI.
    fig.savefig(output_png, dpi=DPI)
    plt.close(fig)
    return BatchPicture(output_png, names, rows, columns)


def write_batch_picture(config: TrainConfig, output_png: str, columns: int = 8) -> BatchPicture:
    """Writes ``train``'s first augmented batch under ``config`` as a titled grid.

    Raises:
      FileNotFoundError, ValueError: As ``train`` for the records and the batch size.
    """
    manifest = Manifest.load(config.records_dir)
    images, labels = first_training_batch(config, manifest)
    return plot_batch(images, labels, manifest.class_names, output_png, columns)
