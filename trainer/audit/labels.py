"""Label audit: which images of a records directory most likely carry the wrong label.

1. Features: every labelled record (train and val) once through a pretrained frozen base
   (``trainer.audit.features``, cached in the output folder).
2. Out-of-sample probabilities: k-fold cross-validation of a cheap head (standardised
   features -> logistic regression), so each image's P(given label) comes from a head
   that never saw it. A head that has seen an image has learnt its label, wrong or not.
3. Ranking by confident learning: ``cleanlab.filter.find_label_issues`` flags the images
   whose given label disagrees with what the other images' heads expect, beyond each
   class's estimated noise rate; every image is ranked by P(given label)
   (cleanlab's ``self_confidence``), lowest first.

The data audit (``trainer.audit.analysis``) ranks every image by P(given label) and puts
the flags in its report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from absl import logging

from records import schema

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


def fold_assignment(
    labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Each image's held-out fold (0..folds-1): stratified, so each fold has both classes.

    ``groups`` (one id per image, e.g. near-duplicate groups) keeps a group in one fold:
    a head that trained on one copy of a photo has learnt its label, so the other copy's
    out-of-fold P(given label) would say nothing (25,000 images with ~3 near-copies each
    had 0 label flags with plain folds).

    Raises:
      ValueError: A class has fewer than ``folds`` images.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    counts = np.bincount(labels, minlength=len(schema.CLASS_NAMES))
    if counts.min() < folds:
        raise ValueError(
            f"--folds={folds} needs at least {folds} images of each class; the records hold "
            + ", ".join(f"{n} {name}" for name, n in zip(schema.CLASS_NAMES, counts))
        )
    fold_of = np.empty(len(labels), np.int64)
    if (
        groups is not None
        and min(len(np.unique(groups[labels == label])) for label in np.unique(labels)) < folds
    ):
        # Features that call most images copies of each other (a random-weight base) leave
        # too few groups to fold: fold by image, as without groups.
        logging.warning(
            "too few near-duplicate groups per class for %d folds; folding by image", folds
        )
        groups = None
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
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
class LabelScores:
    """How likely each image's given label is wrong.

    Attributes:
      probabilities: [N, num_classes] out-of-fold P(class).
      fold_of: [N] the fold each image was held out in.
      given: [N] P(given label), out of fold (low = suspect).
      flagged: [N] cleanlab's confident learning calls the label an issue.
      accuracy: Accuracy of the held-out predictions (how good the head is).
    """

    probabilities: np.ndarray
    fold_of: np.ndarray
    given: np.ndarray
    flagged: np.ndarray
    accuracy: float


def label_scores(
    labels: np.ndarray,
    vectors: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    make_head: Callable = logistic_head,
) -> LabelScores:
    """Out-of-fold P(given label) and cleanlab's flags for every image (``groups``: images
    that must share a fold, see ``fold_assignment``).

    Raises:
      ValueError: Too few images per class for ``folds``.
    """
    fold_of = fold_assignment(labels, folds, seed, groups)
    probabilities = out_of_fold_probabilities(vectors, labels, fold_of, make_head)
    flagged = np.zeros(len(labels), bool)
    flagged[find_issues(labels, probabilities)] = True
    return LabelScores(
        probabilities=probabilities,
        fold_of=fold_of,
        given=probabilities[np.arange(len(labels)), labels],
        flagged=flagged,
        accuracy=float(np.mean(np.argmax(probabilities, axis=1) == labels)),
    )
