"""How likely each image shows neither a cat nor a dog, from two offline signals.

Confident learning (``trainer.audit.labels``) only sees a label swapped between the two
classes: a head trained on shelter photos calls a shelter's sign a dog with confidence,
so a photo of neither class hides among the well-labelled. Two signals that need no
training see it:

* ``animal``: the pretrained network's own ImageNet classifier (where the backbone has
  one offline, ``Backbone.imagenet_classifier``) on the same pooled features: its
  probability mass on the dog breeds and the domestic cats. A sign, a trailer or a
  drawing gets little.
* ``outlier``: 1 - the mean cosine similarity to the ``OUTLIER_NEIGHBOURS`` nearest
  images (``trainer.audit.neighbours``): a photo unlike every other photo in the set.

Each alone misses in its own way (measured on the sample, docs/evaluating.md): the
ImageNet head also gives little mass to many real cats (in cages, in baskets: ImageNet's
cat classes are narrow), the outlier score also ranks unusual real photos high. The
combined score is the mean of the two percentile ranks, so an image must be unusual on
both to rank first; on the sample's eight photos of neither class (tests/data/
neither_photos.txt) the ImageNet head alone ranked them 2nd-25th, the outlier score 1st-9th,
the combination 1st-9th with the cats in cages pushed down.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.audit import neighbours as neighbours_lib
from trainer.models import efficientnet_lite

OUTLIER_NEIGHBOURS = 10
# ImageNet class groups: the dog breeds and the domestic cats (tabby ... Egyptian cat).
ANIMAL_CLASSES = np.r_[
    efficientnet_lite.IMAGENET_DOG_CLASSES, efficientnet_lite.IMAGENET_CAT_CLASSES
]
# Flagged as "neither": the ImageNet head gives the dog breeds and cats together under
# ANIMAL_MAX (an absolute probability) and the image is among the OUTLIER_TOP fraction least
# like the others. On the sample: 13 flagged, the eight known photos among them (and a
# fence, two people holding something, two real cats); both signals in their top 1% flagged
# 18, the outlier's top 1% alone 60, mostly real photos. Without an ImageNet head nothing is
# flagged: the outlier score alone is a ranking to look at, not a verdict.
ANIMAL_MAX = 0.1
OUTLIER_TOP = 0.01


@dataclasses.dataclass(frozen=True)
class NeitherScores:
    """Per image (higher = more likely neither class).

    Attributes:
      score: The combined score in (0, 1]: the mean of the signals' percentile ranks.
      animal: P(a dog breed or a domestic cat) by the ImageNet head; NaN without one.
      outlier: 1 - mean cosine similarity to the nearest ``OUTLIER_NEIGHBOURS`` images.
      flagged: P(animal) < ``ANIMAL_MAX`` and the outlier score in the top ``OUTLIER_TOP``.
    """

    score: np.ndarray
    animal: np.ndarray
    outlier: np.ndarray
    flagged: np.ndarray


def animal_probability(vectors: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """P(dog breed or domestic cat) by an ImageNet classifier on pooled features [N, D]."""
    logits = vectors.astype(np.float64) @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities[:, ANIMAL_CLASSES].sum(axis=1)


def percentile_rank(score: np.ndarray) -> np.ndarray:
    """Each score's rank / N in (0, 1], 1 for the highest (ties share the upper rank)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), np.float64)
    ranks[order] = np.arange(1, len(score) + 1)
    # Equal scores get the same (highest) rank, so ties cannot be broken by file order.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = np.maximum.reduceat(ranks[order], np.r_[0, np.cumsum(counts)[:-1]])[inverse]
    return ranks / len(score)


def scores(
    vectors: np.ndarray,
    neighbours: neighbours_lib.Neighbours,
    classifier: tuple[np.ndarray, np.ndarray] | None,
) -> NeitherScores:
    """The neither-class scores of every image (``classifier``: kernel and bias, or None)."""
    outlier = 1.0 - neighbours.similarity[:, :OUTLIER_NEIGHBOURS].mean(axis=1)
    outlier_rank = percentile_rank(outlier)
    if classifier is None:
        animal = np.full(len(vectors), np.nan)
        return NeitherScores(
            score=outlier_rank,
            animal=animal,
            outlier=outlier,
            flagged=np.zeros(len(vectors), bool),
        )
    animal = animal_probability(vectors, *classifier)
    animal_rank = percentile_rank(-animal)
    return NeitherScores(
        score=(animal_rank + outlier_rank) / 2,
        animal=animal,
        outlier=outlier,
        flagged=(animal < ANIMAL_MAX) & (outlier_rank > 1 - OUTLIER_TOP),
    )
