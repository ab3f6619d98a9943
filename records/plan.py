"""Pass 1 of a conversion: every input listed, hashed, deduplicated, split and sharded.

The plan is a pure function of the inputs' bytes and the settings: duplicates
(byte-identical files; the smallest name is kept), the split (``split_of``: with
``u = int(sha256[:16], 16)``, val if ``u < int(val_fraction * 2**64)``, else test if
``u < int(val_fraction * 2**64) + int(test_fraction * 2**64)``, else train; so an image
always lands in the same split on any machine or worker count, and copies cannot
straddle splits), and the shards (each split's images sorted by sha256, which mixes the
classes, cut into contiguous runs). ``Plan.digest`` names this exact conversion;
``records.writer`` writes it (pass 2).

The test range sits just above val's, so test is cut out of what was train: turning
``--test_fraction`` on moves no val image, and val scores stay comparable with those of
earlier conversions. Without it the plan has no test split at all, and its digest,
settings and shards are those of a conversion made before the test split existed.

Every input found is in exactly one place of the plan: a shard, ``skipped`` (with its
reason: unusable while listing, unreadable, empty, copies labelled both ways, named by
``--exclude``) or a duplicate group's ``dropped``. A folder that could not be listed is
one input found and one skipped (see ``records.inputs.sources``); ``folders`` counts
folders separately.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from absl import logging

from records import exclude, schema
from records.convert_options import ConvertOptions
from records.inputs import sources

# Default shard size: big enough that reading is sequential, small enough that a split
# has several shards to spread over readers. Estimated from the source file sizes.
TARGET_SHARD_BYTES = 150 * 2**20
MIN_SHARDS = {"train": 4, "val": 2, "test": 2}
# Recorded in the settings (so in the digest). Without a test split the text is the one
# conversions recorded before the test split existed, so their digests stay as they were.
SPLIT_RULE = "int(sha256[:16], 16) < int(val_fraction * 2**64) -> val"
SPLIT_RULE_WITH_TEST = (
    f"{SPLIT_RULE}, < int(val_fraction * 2**64) + int(test_fraction * 2**64) -> test, else train"
)


def split_rule(test_fraction: float) -> str:
    """The ``split_rule`` a conversion with this ``test_fraction`` records."""
    return SPLIT_RULE_WITH_TEST if test_fraction > 0 else SPLIT_RULE


def splits_of(test_fraction: float) -> tuple[str, ...]:
    """The splits a conversion has: ``schema.SPLITS``, less test when it takes none."""
    return tuple(s for s in schema.SPLITS if s != "test" or test_fraction > 0)


def split_of(sha256: str, val_fraction: float, test_fraction: float = 0.0) -> str:
    """The split of an image, from its identity alone (stable everywhere).

    Args:
      sha256: Hex sha256 of the image's source bytes.
      val_fraction: Share of the hash range that is val (its bottom).
      test_fraction: Share that is test, right above val's.

    Returns:
      ``"val"``, ``"test"`` or ``"train"``.
    """
    # Integers throughout: exact, so no platform's float rounding can move an image. The
    # test bound adds two truncated products rather than truncating (val + test) * 2**64:
    # the float sum may round, which would let val's edge and test's disagree.
    position = int(sha256[:16], 16)
    val_bound = int(val_fraction * 2**64)
    if position < val_bound:
        return "val"
    if position < val_bound + int(test_fraction * 2**64):
        return "test"
    return "train"


def default_num_shards(split: str, num_examples: int, total_bytes: int) -> int:
    """Shards of about ``TARGET_SHARD_BYTES``, at least ``MIN_SHARDS[split]``, none empty."""
    if num_examples == 0:
        return 0
    wanted = max(MIN_SHARDS[split], math.ceil(total_bytes / TARGET_SHARD_BYTES))
    return min(wanted, num_examples)


def skip_entry(source: sources.SourceImage, reason: str) -> dict[str, str]:
    """A manifest ``skipped`` entry; names made readable (they may not be UTF-8)."""
    return {
        "source": sources.display_name(source.name),
        "path": sources.display_name(source.location),
        "reason": reason,
    }


@dataclasses.dataclass
class Plan:
    """Everything decided before any image is written.

    Attributes:
      settings: What the output depends on besides the input bytes.
      inputs: One description per ``--input`` (path, kind, files).
      inputs_found: Files, rows, zip entries and unreadable folders found.
      skipped: Inputs found unusable while planning, as ``skip_entry`` dicts.
      duplicates: ``{"sha256", "kept", "dropped": [...]}`` per group of identical files.
      shards: split -> shards, each a list of ``(source, sha256)``; the splits in
        ``schema.SPLITS`` order, test only when the conversion has one (``splits_of``).
      folders: ``{"found", "read", "skipped"}`` summed over the folder inputs.
    """

    settings: dict[str, Any]
    inputs: list[dict[str, Any]]
    inputs_found: int
    skipped: list[dict[str, str]]
    duplicates: list[dict[str, Any]]
    shards: dict[str, list[list[tuple[sources.SourceImage, str]]]]
    folders: dict[str, int]

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this conversion writes (an empty one too: its manifest entry)."""
        return tuple(self.shards)

    def shard_files(self, split: str) -> list[str]:
        count = len(self.shards[split])
        return [schema.shard_name(split, index, count) for index in range(count)]

    @property
    def digest(self) -> str:
        """sha256 of everything that determines the output bytes."""
        described = {
            "settings": self.settings,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            # Raw names, not display names: json.dumps escapes a non-UTF-8 name's
            # surrogates exactly, so two names that display alike still differ here.
            "shards": {
                split: [
                    [(s.name, s.location, s.label, sha) for s, sha in shard] for shard in shards
                ]
                for split, shards in self.shards.items()
            },
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _exclude(
    exclusion: exclude.Exclusion | None, items: list[sources.SourceImage]
) -> tuple[list[sources.SourceImage], list[sources.SourceImage], dict[str, Any] | None]:
    """(kept, excluded, the plan's ``exclude`` setting) for ``--exclude``.

    Excluded inputs are left out before hashing: they take no part in finding
    duplicates, and no other image moves, since an image's split is its own sha256's.
    """
    if exclusion is None:
        return items, [], None
    kept, excluded = [], []
    for source in items:
        excluded_now = sources.display_name(source.name) in exclusion.names
        (excluded if excluded_now else kept).append(source)
    input_names = sorted({sources.display_name(s.name) for s in items})
    unmatched = sorted(exclusion.names.difference(input_names))
    if unmatched:
        logging.warning("%s", exclude.describe_unmatched(exclusion, unmatched, input_names))
    logging.info(
        "--exclude %s (%s%s): %d names, %d inputs excluded",
        exclusion.path,
        exclusion.kind,
        f", issues {','.join(exclusion.issues)}" if exclusion.issues else "",
        len(exclusion.names),
        len(excluded),
    )
    # In the settings, so in the digest: a rerun with the same selection resumes or
    # reports "done", a different one is a different conversion (refused without
    # --overwrite, naming this entry). The selection's hash, not the file's: the audit's
    # rows can be re-ranked without changing what is left out.
    setting = {
        "file": exclusion.path,
        "kind": exclusion.kind,
        "issues": list(exclusion.issues) if exclusion.issues else None,
        "names": len(exclusion.names),
        "names_sha256": exclusion.names_sha256,
        "excluded": len(excluded),
        "unmatched": len(unmatched),
        "unmatched_examples": unmatched[:5],
    }
    return kept, excluded, setting


def _list_inputs(
    inputs: Sequence[str],
) -> tuple[list[dict[str, Any]], list[sources.SourceImage], dict[str, int]]:
    described, items = [], []
    folders = dict.fromkeys(("found", "read", "skipped"), 0)
    for path in inputs:
        listing = sources.list_labelled(path, schema.CLASS_NAMES)
        logging.info("input %s: %s with %d files", path, listing.kind, len(listing.items))
        described.append(
            {"path": os.path.abspath(path), "kind": listing.kind, "files": len(listing.items)}
        )
        items.extend(listing.items)
        folders["found"] += listing.folders_found
        folders["read"] += listing.folders_read
        folders["skipped"] += listing.folders_skipped
    return described, items, folders


def make_plan(options: ConvertOptions, pool_map, progress) -> Plan:
    """Lists and hashes every input and decides duplicates, splits and shards.

    Args:
      options: The conversion settings.
      pool_map: An ordered ``map`` (possibly over a process pool) for hashing.
      progress: Makes a progress reporter: ``progress(what, total)`` with
        ``update()`` and ``close()``.

    Returns:
      The plan.

    Raises:
      sources.InputError: For a missing, empty or unreadable input.
    """
    described, items, folders = _list_inputs(options.inputs)
    kept, excluded, excluded_setting = _exclude(options.exclusion, items)
    skipped = [skip_entry(s, exclude.REASON) for s in excluded]
    skipped += [skip_entry(s, s.problem) for s in kept if s.problem]
    usable = [s for s in kept if not s.problem]

    bar = progress("hashing", len(usable))
    by_sha: dict[str, list[tuple[sources.SourceImage, int]]] = collections.defaultdict(list)
    for source, result in zip(usable, pool_map(sources.read_digest, usable)):
        bar.update()
        if result[0] == "skip":
            skipped.append(skip_entry(source, result[1]))
        else:
            by_sha[result[1]].append((source, result[2]))
    bar.close()

    duplicates, chosen = [], []  # chosen: (source, sha, size)
    for sha, group in sorted(by_sha.items()):
        group.sort(key=lambda pair: (pair[0].name, pair[0].location))
        labels = {s.label for s, _ in group}
        if len(labels) > 1:
            # The same picture labelled both ways: no honest way to pick one.
            names = ", ".join(sources.display_name(s.name) for s, _ in group)
            for source, _ in group:
                skipped.append(
                    skip_entry(source, f"byte-identical copies carry different labels ({names})")
                )
            continue
        kept, size = group[0]
        chosen.append((kept, sha, size))
        if len(group) > 1:
            duplicates.append(
                {
                    "sha256": sha,
                    "kept": sources.display_name(kept.name),
                    "dropped": [sources.display_name(s.name) for s, _ in group[1:]],
                }
            )

    settings: dict[str, Any] = {
        "inputs": [d["path"] for d in described],
        "val_fraction": options.val_fraction,
        "split_rule": split_rule(options.test_fraction),
        "max_short_side": options.max_short_side,
        "jpeg_quality": options.jpeg_quality,
    }
    if excluded_setting is not None:
        # Only when given: the digest of a conversion without --exclude stays as it was.
        settings["exclude"] = excluded_setting
    if options.test_fraction > 0:
        # Likewise: without a test split, settings and shards are as they always were.
        settings["test_fraction"] = options.test_fraction
    shards = {}
    for split in splits_of(options.test_fraction):
        members = sorted(
            (
                (s, sha, size)
                for s, sha, size in chosen
                if split_of(sha, options.val_fraction, options.test_fraction) == split
            ),
            key=lambda triple: triple[1],
        )
        requested = getattr(options, f"{split}_shards")
        count = (
            requested
            if requested is not None
            else default_num_shards(split, len(members), sum(size for _, _, size in members))
        )
        settings[f"{split}_shards"] = count
        # Contiguous runs of the sha-sorted list: sizes differ by at most one.
        shards[split] = [
            [
                (s, sha)
                for s, sha, _ in members[
                    i * len(members) // count : (i + 1) * len(members) // count
                ]
            ]
            for i in range(count)
        ]
    skipped.sort(key=lambda entry: (entry["source"], entry["path"]))
    return Plan(settings, described, len(items), skipped, duplicates, shards, folders)
