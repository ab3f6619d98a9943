"""Nearest neighbours in feature space, and the near-duplicates among them.

Every image's ``k`` most similar others by cosine similarity of the base's pooled
features, computed a block of rows at a time (``BLOCK`` x N similarities, never N x N:
25,000 images need a 100 MB block, not 2.5 GB). Two uses: how far an image is from its
nearest neighbours (``trainer.audit.neither``'s outlier signal) and near-duplicates,
pairs above ``DUPLICATE_SIMILARITY``.

The threshold, measured on the sample (docs/evaluating.md, "Auditing the data"):
efficientnet_lite0 features at 224 px, 40 planted copies of sample photos (10 each
re-encoded at quality 50, resized to 60%, mirrored, cropped by 5%) had similarity
0.928-0.992 with their originals; the most similar pair of distinct photos among the
6,001 was 0.874 (two tabby cats), the next 0.872. 0.90 sits in that gap; two pairs of the
sample's own are above it (0.988 and 0.976) and are the same photo saved twice.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Rows of the similarity matrix computed at once.
BLOCK = 1024
DUPLICATE_SIMILARITY = 0.90
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


def nearest(vectors: np.ndarray, k: int) -> Neighbours:
    """The ``k`` most cosine-similar other rows of ``vectors`` [N, D] for every row.

    Raises:
      ValueError: Fewer than ``k + 1`` rows.
    """
    if len(vectors) <= k:
        raise ValueError(f"{len(vectors)} images: the neighbour scores need more than {k}")
    unit = vectors.astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
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


def duplicates(
    neighbours: Neighbours,
    splits: tuple[str, ...],
    filenames: tuple[str, ...],
    threshold: float = DUPLICATE_SIMILARITY,
) -> Duplicates:
    """Pairs of neighbours at least ``threshold`` similar, grouped; one of each group kept.

    The kept member is a val image where the group has one, else a test image (dropping
    the train copies ends the leakage and leaves the yardsticks as they were), else the
    smallest file name (as make_records keeps the smallest name of byte-identical copies).
    """
    found: dict[tuple[int, int], float] = {}
    rows, columns = np.nonzero(neighbours.similarity >= threshold)
    for i, column in zip(rows.tolist(), columns.tolist()):
        j = int(neighbours.index[i, column])
        found[min(i, j), max(i, j)] = float(neighbours.similarity[i, column])
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
