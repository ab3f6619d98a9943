"""Label audit: which images of a records directory most likely carry the wrong label.

1. Features: every labelled record (train and val) once through a pretrained frozen base
   (``trainer.training.features``, cached in the output folder).
2. Out-of-sample probabilities: k-fold cross-validation of a cheap head (standardised
   features -> logistic regression), so each image's P(given label) comes from a head
   that never saw it. A head that has seen an image has learnt its label, wrong or not.
3. Ranking by confident learning: ``cleanlab.filter.find_label_issues`` flags the images
   whose given label disagrees with what the other images' heads expect, beyond each
   class's estimated noise rate; every image is ranked by P(given label)
   (cleanlab's ``self_confidence``), lowest first.

Outputs: a CSV with a row for *every* image (name, split, given label, P(given label),
rank, flagged ...) and a titled picture grid of the most suspect images (flagged ones
marked).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable

import keras
import numpy as np
from absl import logging

from records import schema
from records.manifest import Manifest
from trainer import plots
from trainer.audit import features as audit_features

CSV_NAME = "label_issues.csv"
GRID_NAME = "label_issues.png"
CSV_COLUMNS = (
    "rank",
    "filename",
    "split",
    "given_label",
    "p_given_label",
    "flagged",
    "predicted_label",
    "fold",
)
# Inverse regularisation strength of the logistic head on standardised features, chosen on
# the real sample by out-of-fold log loss (BUILD_NOTES, "Auditing labels"): efficientnet_lite0
# features at 224 px gave 0.0367 / 0.0323 / 0.0326 / 0.0354 / 0.0444 for C = 0.003 / 0.01 /
# 0.03 / 0.1 / 1, accuracy flat at 0.986-0.988. Calibration matters here: confident
# learning compares each probability with per-class thresholds, and a less regularised
# (overconfident) head flagged 20 images where this one flags 3.
HEAD_C = 0.03


def logistic_head():
    """The default cheap head: standardise each feature, then L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=HEAD_C, max_iter=2000))


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's held-out fold (0..folds-1): stratified, so each fold has both classes.

    Raises:
      ValueError: A class has fewer than ``folds`` images.
    """
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=len(schema.CLASS_NAMES))
    if counts.min() < folds:
        raise ValueError(
            f"--folds={folds} needs at least {folds} images of each class; the records hold "
            + ", ".join(f"{n} {name}" for name, n in zip(schema.CLASS_NAMES, counts))
        )
    fold_of = np.empty(len(labels), np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[held_out] = fold
    return fold_of


def out_of_fold_probabilities(
    vectors: np.ndarray,
    labels: np.ndarray,
    fold_of: np.ndarray,
    make_head: Callable = logistic_head,
) -> np.ndarray:
    """P(class) [N, num_classes] for each image from a head trained without its fold.

    Args:
      vectors: [N, D] features.
      labels: [N] given labels.
      fold_of: [N] each image's fold (``fold_assignment``).
      make_head: () -> a new scikit-learn-style classifier (``fit``, ``predict_proba``).
    """
    probabilities = np.full((len(labels), len(schema.CLASS_NAMES)), np.nan)
    for fold in np.unique(fold_of):
        held_out = fold_of == fold
        head = make_head()
        head.fit(vectors[~held_out], labels[~held_out])
        columns = np.asarray(head.classes_, np.int64)
        probabilities[np.ix_(held_out, columns)] = head.predict_proba(vectors[held_out])
        logging.info(
            "fold %d: trained on %d, predicted %d", fold, int((~held_out).sum()), held_out.sum()
        )
    return probabilities


def find_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices cleanlab flags as label issues, most suspect (lowest P(given label)) first."""
    from cleanlab.filter import find_label_issues

    # n_jobs=1: cleanlab would otherwise start a multiprocessing pool in a process that is
    # running TensorFlow (fork after TF threads exist can deadlock); it is fast anyway.
    return find_label_issues(
        labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1
    )


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """What ``audit`` found and wrote.

    Attributes:
      csv_path: One row per image, by rank.
      grid_path: The picture of the ``num_show`` most suspect images, by rank, flagged
        ones marked (None when ``num_show`` is 0).
      num_images: Images audited.
      num_flagged: Images cleanlab flagged.
      out_of_fold_accuracy: Accuracy of the held-out predictions (how good the head is).
      suspects: File names of the flagged images, most suspect first.
    """

    csv_path: str
    grid_path: str | None
    num_images: int
    num_flagged: int
    out_of_fold_accuracy: float
    suspects: tuple[str, ...]


def _write_csv(path, features, probabilities, fold_of, flagged, order) -> None:
    given = probabilities[np.arange(len(features)), features.labels]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for rank, index in enumerate(order, start=1):
            writer.writerow(
                [
                    rank,
                    features.filenames[index],
                    features.splits[index],
                    schema.CLASS_NAMES[features.labels[index]],
                    f"{given[index]:.6f}",
                    int(flagged[index]),
                    schema.CLASS_NAMES[int(np.argmax(probabilities[index]))],
                    int(fold_of[index]),
                ]
            )


def plot_suspects(pictures, titles, output_png: str, columns: int = 5) -> str:
    """Draws ``pictures`` (as the base saw them) in a grid, each with its (multi-line) title."""
    return plots.image_grid(pictures, titles, output_png, columns=columns)


def audit(
    manifest: Manifest,
    output_dir: str,
    *,
    backbone: str,
    weights: str,
    image_size: tuple[int, int],
    folds: int = 5,
    num_show: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    make_head: Callable = logistic_head,
    progress: bool | None = None,
) -> AuditResult:
    """Audits every labelled image of ``manifest`` (train and val) and writes the outputs.

    Args:
      manifest: The records directory.
      output_dir: Where the CSV, the grid and the feature cache go.
      backbone: A ``trainer.models.backbones`` name.
      weights: "imagenet", "none" or a weights file (as ``train --weights``).
      image_size: (height, width) the records are decoded to for the base.
      folds: Cross-validation folds (each image is predicted by a head trained on the
        other folds).
      num_show: Images in the picture grid: the most suspect, by rank.
      batch_size: Images per forward pass of the base.
      seed: Seeds the fold assignment (and a base with random weights).
      make_head: () -> a new scikit-learn-style classifier.
      progress: Progress bar for the feature extraction (None: on a terminal only).

    Raises:
      ValueError: Too few images per class for ``folds``, or no labelled records.
      FileNotFoundError: A shard is missing.
      trainer.models.model.WeightsError: The base's weights cannot be obtained.
    """
    os.makedirs(output_dir, exist_ok=True)
    # A random-weight base (--weights=none) is made by the seed, so it is part of the key;
    # a pretrained one is not, so other --seed/--folds reuse its features.
    weights_key = f"none (seed {seed})" if weights.lower() == "none" else weights
    key = audit_features.fingerprint(manifest, backbone, weights_key, image_size)
    cache = os.path.join(output_dir, f"features-{backbone}-{image_size[0]}x{image_size[1]}.npz")
    features = audit_features.load(cache, key)
    if features is None:
        # Only matters for a base with random weights (--weights=none): same seed, same base.
        keras.utils.set_random_seed(seed)
        model = audit_features.extractor(backbone, weights, image_size)
        features = audit_features.extract(manifest, model, batch_size, progress=progress)
        audit_features.save(features, cache, key)
        logging.info("features cached in %s", cache)
    else:
        logging.info("features of %d images read from the cache %s", len(features), cache)

    fold_of = fold_assignment(features.labels, folds, seed)
    probabilities = out_of_fold_probabilities(features.vectors, features.labels, fold_of, make_head)
    issues = find_issues(features.labels, probabilities)
    flagged = np.zeros(len(features), bool)
    flagged[issues] = True
    given = probabilities[np.arange(len(features)), features.labels]
    # Every image by P(given label), lowest first (stable: ties keep the record order).
    order = np.argsort(given, kind="stable")
    csv_path = os.path.join(output_dir, CSV_NAME)
    _write_csv(csv_path, features, probabilities, fold_of, flagged, order)

    # The most suspect by rank, flagged or not: how many cleanlab flags depends on the
    # head's calibration, and the next few are worth a look too.
    shown = [int(i) for i in order[:num_show]]
    grid_path = None
    if shown:
        titles = [
            f"{features.filenames[i]}\n{features.splits[i]}, given "
            f"{schema.CLASS_NAMES[features.labels[i]]}{', FLAGGED' if flagged[i] else ''}\n"
            f"P(given) = {given[i]:.3f}"
            for i in shown
        ]
        pictures = audit_features.images_at(
            manifest,
            image_size,
            [(features.splits[i], int(features.positions[i])) for i in shown],
            batch_size,
        )
        grid_path = plot_suspects(pictures, titles, os.path.join(output_dir, GRID_NAME))
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == features.labels))
    return AuditResult(
        csv_path=csv_path,
        grid_path=grid_path,
        num_images=len(features),
        num_flagged=int(flagged.sum()),
        out_of_fold_accuracy=accuracy,
        suspects=tuple(features.filenames[i] for i in order if flagged[i]),
    )
