"""Nearest neighbours in feature space, and the near-duplicates among them.

Every image's ``k`` most similar others by cosine similarity of the base's pooled
features, computed a block of rows at a time (``BLOCK`` x N similarities, never N x N:
25,000 images need a 100 MB block, not 2.5 GB). Two uses: how far an image is from its
nearest neighbours (``trainer.audit.neither``'s outlier signal) and near-duplicates:
pairs whose features are at least ``DUPLICATE_SIMILARITY`` similar, or whose thumbnails
(``trainer.audit.features.thumbnails``) correlate at least ``THUMBNAIL_SIMILARITY``.

The thresholds, measured on the sample (docs/evaluating.md, "Auditing the data"):
efficientnet_lite0 features at 224 px, 40 planted copies of sample photos (10 each
re-encoded at quality 50, resized to 60%, mirrored, cropped by 5%) had similarity
0.928-0.992 with their originals; the most similar pair of distinct photos among the
6,001 was 0.874 (two tabby cats), the next 0.872. 0.90 sits in that gap; two pairs of the
sample's own are above it (0.988 and 0.976) and are the same photo saved twice.

The features miss small copies (``scripts/benchmark_audit_aspect.py``: 40 copies squashed
or stretched to another aspect ratio): a copy with the area kept stays 0.975-0.996 alike
(the eval decode squashes every whole frame to the square), but at a long side of 128 px
it falls to 0.74-0.90 and at 64 px to 0.34-0.75 (the base sees it upscaled and blurred),
so the features alone paired 14 of the 40. Their 16x16 thumbnails correlated 0.9947-1.0,
while no two distinct photos of the sample pass 0.931 (two dark dogs on grass, whose
features are only 0.66 alike); 0.97 sits in that gap, and with it all 40 pair and no
other pair appears. The thumbnail misses what the features catch (a mirrored or cropped
copy), so either signal pairs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Rows of the similarity matrix computed at once.
BLOCK = 1024
DUPLICATE_SIMILARITY = 0.90
THUMBNAIL_SIMILARITY = 0.97
# Which copy of a near-duplicate group is kept: held-out splits first, train last.
_KEEP_FIRST = {"val": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """Each image's ``k`` nearest others, most similar first.

    Attributes:
      index: int64 [N, k] their row numbers.
      similarity: float32 [N, k] their cosine similarities.
    """

    index: np.ndarray
    similarity: np.ndarray


def _unit(vectors: np.ndarray) -> np.ndarray:
    unit = vectors.astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    return unit


def nearest(vectors: np.ndarray, k: int) -> Neighbours:
    """The ``k`` most cosine-similar other rows of ``vectors`` [N, D] for every row.

    Raises:
      ValueError: Fewer than ``k + 1`` rows.
    """
    if len(vectors) <= k:
        raise ValueError(f"{len(vectors)} images: the neighbour scores need more than {k}")
    unit = _unit(vectors)
    index = np.empty((len(unit), k), np.int64)
    similarity = np.empty((len(unit), k), np.float32)
    for start in range(0, len(unit), BLOCK):
        block = unit[start : start + BLOCK] @ unit.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # Not its own neighbour.
        # argpartition: the k largest in O(N) per row, then only those k are sorted.
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        index[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        similarity[start : start + len(block)] = np.take_along_axis(values, order, axis=1)
    return Neighbours(index=index, similarity=similarity)


@dataclasses.dataclass(frozen=True)
class Duplicates:
    """Near-duplicate pairs and, per image, what to do about them.

    Attributes:
      pairs: (i, j, similarity) with i < j, most similar first.
      keep_instead: int64 [N]: for an image to drop, the group member kept instead of it;
        -1 for every other image.
      closest: int64 [N]: each image's most similar group member (-1 outside a group).
      group: int64 [N]: a group id per image (an image without copies is its own group).
    """

    pairs: tuple[tuple[int, int, float], ...]
    keep_instead: np.ndarray
    closest: np.ndarray
    group: np.ndarray


def _groups(num: int, pairs) -> np.ndarray:
    """Union-find: each image's group root (a chain of near-copies is one group)."""
    parent = np.arange(num)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    return np.array([root(i) for i in range(num)])


def _pairs_above(neighbours: Neighbours, threshold: float) -> dict[tuple[int, int], float]:
    """(i, j) with i < j -> similarity, for every neighbour at least ``threshold`` similar."""
    found: dict[tuple[int, int], float] = {}
    rows, columns = np.nonzero(neighbours.similarity >= threshold)
    for i, column in zip(rows.tolist(), columns.tolist()):
        j = int(neighbours.index[i, column])
        found[min(i, j), max(i, j)] = float(neighbours.similarity[i, column])
    return found


def duplicates(
    neighbours: Neighbours,
    splits: tuple[str, ...],
    filenames: tuple[str, ...],
    threshold: float = DUPLICATE_SIMILARITY,
    *,
    vectors: np.ndarray | None = None,
    thumbnails: np.ndarray | None = None,
    thumbnail_threshold: float = THUMBNAIL_SIMILARITY,
) -> Duplicates:
    """Near-duplicate pairs, grouped; one of each group kept.

    A pair: neighbours (``neighbours``, of the features) at least ``threshold`` similar,
    or, with ``thumbnails``, images whose thumbnails correlate at least
    ``thumbnail_threshold`` (a copy at another aspect ratio or size, which the features
    miss). Every pair carries its features' cosine similarity, so one scale ranks them all
    (a pair found by its thumbnails may be below ``threshold``).

    The kept member is a val image where the group has one, else a test image (dropping
    the train copies ends the leakage and leaves the yardsticks as they were), else the
    smallest file name (as make_records keeps the smallest name of byte-identical copies).

    Args:
      neighbours: ``nearest`` of the features.
      splits, filenames: Per image.
      threshold: Feature similarity from which two images are near-duplicates.
      vectors: float [N, D] the features ``neighbours`` was made from; needed with
        ``thumbnails`` (for the similarity of the pairs that only the thumbnails find).
      thumbnails: float [N, T] (``trainer.audit.features.thumbnails``), or None: the
        features alone.
      thumbnail_threshold: Thumbnail correlation from which two images are near-duplicates.

    Raises:
      ValueError: ``thumbnails`` without ``vectors``, or either not one row per image.
    """
    found = _pairs_above(neighbours, threshold)
    if thumbnails is not None:
        if vectors is None or not len(vectors) == len(thumbnails) == len(splits):
            raise ValueError(
                "duplicates: thumbnails need the feature vectors, one row of each per image"
            )
        unit = _unit(vectors)
        close = nearest(thumbnails, neighbours.index.shape[1])
        for i, j in _pairs_above(close, thumbnail_threshold):
            found.setdefault((i, j), float(unit[i] @ unit[j]))
    pairs = tuple(sorted(((i, j, s) for (i, j), s in found.items()), key=lambda p: -p[2]))
    num = len(splits)
    keep_instead = np.full(num, -1, np.int64)
    closest = np.full(num, -1, np.int64)
    best = np.full(num, -np.inf)
    for i, j, similarity in pairs:
        for a, b in ((i, j), (j, i)):
            if similarity > best[a]:
                best[a], closest[a] = similarity, b
    group = _groups(num, pairs)
    members: dict[int, list[int]] = {}
    for i in np.flatnonzero(closest >= 0).tolist():
        members.setdefault(int(group[i]), []).append(i)
    for group_members in members.values():
        kept = min(group_members, key=lambda i: (_KEEP_FIRST.get(splits[i], 2), filenames[i]))
        for i in group_members:
            if i != kept:
                keep_instead[i] = kept
    return Duplicates(pairs=pairs, keep_instead=keep_instead, closest=closest, group=group)
