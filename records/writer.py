"""The conversion: inputs -> plan (split, dedup, shards) -> shards -> manifest.

Two passes:

1. *Plan.* List every input file (``records.sources``), read and sha256 each one (in
   parallel), then decide everything up front, as a pure function of the hashes and the
   settings: duplicates (byte-identical files; the smallest name is kept), the split
   (``int(sha256[:16], 16) < int(val_fraction * 2**64)`` -> val, so an image always lands in
   the same split on any machine or worker count, and copies cannot straddle splits),
   and the shards (each split's images sorted by sha256, which mixes the classes, cut
   into contiguous runs). The plan's digest names this exact conversion.
2. *Write.* Workers validate/convert images (``records.images``) in plan order; this
   process writes each shard to ``<shard>.tmp``, records its counts in a sidecar under
   ``.make_records/``, then renames it to its final name. So a shard under its final
   name is always complete, and a rerun of the same command (same plan digest) reuses
   finished shards and writes only the rest. ``manifest.json`` is written last.

Every input ends up written, skipped (with its reason) or dropped as a duplicate, and
the writer checks that these add up to the inputs found before writing the manifest.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import tensorflow as tf
from absl import logging

from records import images, schema, sources

WORK_DIR = ".make_records"
PLAN_NAME = "plan.json"
TMP_SUFFIX = ".tmp"
# Default shard size: big enough that reading is sequential, small enough that a split
# has several shards to spread over readers. Estimated from the source file sizes.
TARGET_SHARD_BYTES = 150 * 2**20
MIN_SHARDS = {"train": 4, "val": 2}
SPLIT_RULE = "int(sha256[:16], 16) < int(val_fraction * 2**64) -> val"
_LOG_EVERY_S = 10.0


class OutputDirError(ValueError):
    """``--output_dir`` holds something this run must not overwrite or cannot use."""


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """Everything a conversion depends on (what ``make_records`` flags map to).

    Attributes:
      inputs: Folders, zips or tables of labelled images (see ``records.sources``).
      output_dir: Where shards and ``manifest.json`` go.
      val_fraction: Fraction of images for the validation split, in [0, 1).
      train_shards: Number of train shards; None picks one from the data size.
      val_shards: Number of val shards; None picks one from the data size.
      max_short_side: Store a re-encoded copy with the shorter side at most this; None
        keeps original JPEG bytes.
      jpeg_quality: Quality of re-encoded JPEGs (1-95).
      num_workers: Processes for reading/decoding; 1 runs everything in this process.
      overwrite: Replace an existing, different conversion in ``output_dir``.
      progress: Show a tqdm bar (None: only when stderr is a terminal).
    """

    inputs: tuple[str, ...]
    output_dir: str
    val_fraction: float = 0.2
    train_shards: int | None = None
    val_shards: int | None = None
    max_short_side: int | None = None
    jpeg_quality: int = 90
    num_workers: int = 1
    overwrite: bool = False
    progress: bool | None = None

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("at least one input is required")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction {self.val_fraction} is not in [0, 1)")
        for name in ("train_shards", "val_shards", "max_short_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} {value} must be at least 1")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality {self.jpeg_quality} is not in 1..95")
        if self.num_workers < 1:
            raise ValueError(f"num_workers {self.num_workers} must be at least 1")


def split_of(sha256: str, val_fraction: float) -> str:
    """The split of an image, from its identity alone (stable everywhere)."""
    # Integer comparison: exact, so no platform's float rounding can move an image.
    return "val" if int(sha256[:16], 16) < int(val_fraction * 2**64) else "train"


def default_num_shards(split: str, num_examples: int, total_bytes: int) -> int:
    """Shards of about ``TARGET_SHARD_BYTES``, at least ``MIN_SHARDS[split]``, none empty."""
    if num_examples == 0:
        return 0
    wanted = max(MIN_SHARDS[split], math.ceil(total_bytes / TARGET_SHARD_BYTES))
    return min(wanted, num_examples)


@dataclasses.dataclass
class _Plan:
    settings: dict[str, Any]
    inputs: list[dict[str, Any]]
    inputs_found: int
    skipped: list[dict[str, str]]  # found unusable while planning
    duplicates: list[dict[str, Any]]
    # split -> list of shards, each a list of (source, sha256)
    shards: dict[str, list[list[tuple[sources.SourceImage, str]]]]

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
            "shards": {
                split: [
                    [(s.name, s.location, s.label, sha) for s, sha in shard] for shard in shards
                ]
                for split, shards in self.shards.items()
            },
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class _Progress:
    """tqdm on a terminal; otherwise an absl log line every ``_LOG_EVERY_S`` seconds."""

    def __init__(self, what: str, total: int, enabled: bool | None):
        self._what, self._total, self._done = what, total, 0
        self._start = self._last_log = time.monotonic()
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit="img", dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        self._done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            logging.info(
                "%s: %d/%d images (%.1f images/s)",
                self._what,
                self._done,
                self._total,
                self._done / max(now - self._start, 1e-9),
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group; only the parent should handle it, so the
    # workers don't each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _mapper(num_workers: int) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """An ordered, lazy ``map``: a process pool, or the builtin for one worker."""
    if num_workers == 1:
        yield map
        return
    # fork where available: spawn would re-import the entry module (and TensorFlow) in
    # every worker. Workers only run Pillow/hashlib code (records.images/sources).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(num_workers, initializer=_ignore_sigint) as pool:

        def pool_map(function, iterable):
            return pool.imap(function, iterable, chunksize=8)

        yield pool_map


def _list_inputs(inputs: Sequence[str]) -> tuple[list[dict[str, Any]], list[sources.SourceImage]]:
    described, items = [], []
    for path in inputs:
        kind, found = sources.list_labelled(path, schema.CLASS_NAMES)
        logging.info("input %s: %s with %d files", path, kind, len(found))
        described.append({"path": os.path.abspath(path), "kind": kind, "files": len(found)})
        items.extend(found)
    return described, items


def _skip(source: sources.SourceImage, reason: str) -> dict[str, str]:
    return {"source": source.name, "path": source.location, "reason": reason}


def _make_plan(options: ConvertOptions, pool_map, progress: bool | None) -> _Plan:
    described, items = _list_inputs(options.inputs)
    skipped = [_skip(s, s.problem) for s in items if s.problem]
    usable = [s for s in items if not s.problem]

    bar = _Progress("hashing", len(usable), progress)
    by_sha: dict[str, list[tuple[sources.SourceImage, int]]] = collections.defaultdict(list)
    for source, result in zip(usable, pool_map(sources.read_digest, usable)):
        bar.update()
        if result[0] == "skip":
            skipped.append(_skip(source, result[1]))
        else:
            by_sha[result[1]].append((source, result[2]))
    bar.close()

    duplicates, chosen = [], []  # chosen: (source, sha, size)
    for sha, group in sorted(by_sha.items()):
        group.sort(key=lambda pair: (pair[0].name, pair[0].location))
        labels = {s.label for s, _ in group}
        if len(labels) > 1:
            # The same picture labelled both ways: no honest way to pick one.
            names = ", ".join(s.name for s, _ in group)
            for source, _ in group:
                skipped.append(
                    _skip(source, f"byte-identical copies carry different labels ({names})")
                )
            continue
        kept, size = group[0]
        chosen.append((kept, sha, size))
        if len(group) > 1:
            duplicates.append(
                {"sha256": sha, "kept": kept.name, "dropped": [s.name for s, _ in group[1:]]}
            )

    settings: dict[str, Any] = {
        "inputs": [d["path"] for d in described],
        "val_fraction": options.val_fraction,
        "split_rule": SPLIT_RULE,
        "max_short_side": options.max_short_side,
        "jpeg_quality": options.jpeg_quality,
    }
    shards = {}
    for split in schema.SPLITS:
        members = sorted(
            (
                (s, sha, size)
                for s, sha, size in chosen
                if split_of(sha, options.val_fraction) == split
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
    return _Plan(settings, described, len(items), skipped, duplicates, shards)


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomically(path: str, content: dict[str, Any]) -> None:
    tmp = path + TMP_SUFFIX
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sidecar_path(output_dir: str, shard_file: str) -> str:
    return os.path.join(output_dir, WORK_DIR, shard_file + ".json")


def _finished_sidecar(output_dir: str, shard_file: str, digest: str) -> dict[str, Any] | None:
    """The sidecar of a shard finished under this plan, or None if it must be (re)written."""
    path = _sidecar_path(output_dir, shard_file)
    final = os.path.join(output_dir, shard_file)
    if not (os.path.exists(path) and os.path.exists(final)):
        return None
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if sidecar.get("plan_digest") != digest or sidecar.get("sha256") != _sha256_file(final):
        return None
    return sidecar


def _our_files(output_dir: str) -> list[str]:
    """Files in output_dir that a conversion writes (what --overwrite may delete)."""
    names = []
    for name in sorted(os.listdir(output_dir)):
        base = name[: -len(TMP_SUFFIX)] if name.endswith(TMP_SUFFIX) else name
        if schema.parse_shard_name(base) or base == schema.MANIFEST_NAME or name == WORK_DIR:
            names.append(name)
    return names


def _explain_difference(old_settings: dict[str, Any], new_settings: dict[str, Any]) -> str:
    changed = [
        f"{key}: {old_settings.get(key)!r} there, {new_settings.get(key)!r} now"
        for key in sorted(set(old_settings) | set(new_settings))
        if old_settings.get(key) != new_settings.get(key)
    ]
    if changed:
        return "different settings (" + "; ".join(changed) + ")"
    return "the same settings but different input files (added, removed or changed images)"


def _check_output_dir(options: ConvertOptions, plan: _Plan, digest: str) -> str:
    """Decides what to do with ``output_dir``: ``"done"``, ``"resume"`` or ``"fresh"``.

    Raises:
      OutputDirError: If it holds a different conversion and ``overwrite`` is off.
    """
    output_dir = options.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir {output_dir!r} exists and is not a directory")
    os.makedirs(output_dir, exist_ok=True)
    ours = _our_files(output_dir)
    if not ours:
        return "fresh"
    advice = "pass --overwrite to replace it, or use a new --output_dir"
    previous = None
    for path in (schema.manifest_path(output_dir), os.path.join(output_dir, WORK_DIR, PLAN_NAME)):
        if os.path.exists(path):
            try:
                with open(path) as f:
                    previous = json.load(f)
            except (OSError, json.JSONDecodeError):
                previous = {}
            state = "done" if path.endswith(schema.MANIFEST_NAME) else "resume"
            break
    if options.overwrite:
        for name in ours:
            path = os.path.join(output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        logging.info("--overwrite: removed %d old entries from %s", len(ours), output_dir)
        return "fresh"
    if previous is not None and previous.get("plan_digest") == digest:
        if state == "done" and all(
            os.path.exists(os.path.join(output_dir, f))
            for split in schema.SPLITS
            for f in plan.shard_files(split)
        ):
            return "done"
        return "resume"
    if previous is None:
        raise OutputDirError(
            f"--output_dir {output_dir!r} already holds shard files ({ours[0]} ...) but no "
            f"record of how they were made; {advice}"
        )
    raise OutputDirError(
        f"--output_dir {output_dir!r} holds a conversion with "
        f"{_explain_difference(previous.get('settings', {}), plan.settings)}; {advice}"
    )


def _tasks(plan: _Plan, pending: list[tuple[str, int]], options: ConvertOptions):
    for split, index in pending:
        for source, sha in plan.shards[split][index]:
            yield source, sha, options.max_short_side, options.jpeg_quality


def _write_shards(
    plan: _Plan, digest: str, pending: list[tuple[str, int]], options: ConvertOptions, pool_map
) -> int:
    """Writes the pending shards; returns the number of images processed."""
    total = sum(len(plan.shards[split][index]) for split, index in pending)
    results = pool_map(images.prepare_source, _tasks(plan, pending, options))
    bar = _Progress("writing", total, options.progress)
    try:
        for split, index in pending:
            shard_file = plan.shard_files(split)[index]
            final = os.path.join(options.output_dir, shard_file)
            tmp = final + TMP_SUFFIX
            sidecar = {
                "plan_digest": digest,
                "file": shard_file,
                "class_counts": dict.fromkeys(schema.CLASS_NAMES, 0),
                "skipped": [],
                "converted": [],
                "resized": 0,
            }
            written = 0
            with tf.io.TFRecordWriter(tmp) as writer:
                for source, sha in plan.shards[split][index]:
                    status, payload = next(results)
                    bar.update()
                    if status == "skip":
                        sidecar["skipped"].append(_skip(source, payload))
                        continue
                    example = schema.make_example(
                        encoded=payload.encoded,
                        label=source.label,
                        filename=source.name,
                        height=payload.height,
                        width=payload.width,
                        sha256=sha,
                    )
                    # deterministic=True sorts the feature map; otherwise its order follows
                    # a per-process hash seed and identical runs give different shard bytes.
                    writer.write(example.SerializeToString(deterministic=True))
                    written += 1
                    sidecar["class_counts"][schema.CLASS_NAMES[source.label]] += 1
                    sidecar["resized"] += payload.resized
                    if payload.conversion:
                        sidecar["converted"].append(
                            {"source": source.name, "conversion": payload.conversion}
                        )
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            sidecar["num_examples"] = written
            sidecar["sha256"] = _sha256_file(tmp)
            # Sidecar first, then the rename: a final name without a valid sidecar is
            # rewritten on resume, and a sidecar without its shard is ignored.
            _write_json_atomically(_sidecar_path(options.output_dir, shard_file), sidecar)
            os.replace(tmp, final)
            logging.info("wrote %s (%d examples)", shard_file, written)
    finally:
        bar.close()
        for name in os.listdir(options.output_dir):
            if name.endswith(TMP_SUFFIX) and schema.parse_shard_name(name[: -len(TMP_SUFFIX)]):
                os.remove(os.path.join(options.output_dir, name))
    return total


def _manifest(plan: _Plan, digest: str, sidecars: dict[str, dict[str, Any]], options) -> dict:
    splits, skipped, converted = {}, list(plan.skipped), []
    for split in schema.SPLITS:
        shards, class_counts = [], dict.fromkeys(schema.CLASS_NAMES, 0)
        for shard_file in plan.shard_files(split):
            sidecar = sidecars[shard_file]
            shards.append(
                {
                    "file": shard_file,
                    "num_examples": sidecar["num_examples"],
                    "sha256": sidecar["sha256"],
                    "class_counts": sidecar["class_counts"],
                }
            )
            for name, count in sidecar["class_counts"].items():
                class_counts[name] += count
            skipped.extend(sidecar["skipped"])
            converted.extend(sidecar["converted"])
        splits[split] = {
            "num_examples": sum(s["num_examples"] for s in shards),
            "class_counts": class_counts,
            "shards": shards,
        }
    skipped.sort(key=lambda entry: (entry["source"], entry["path"]))
    converted.sort(key=lambda entry: entry["source"])
    accounting = {
        "inputs_found": plan.inputs_found,
        "written": sum(s["num_examples"] for s in splits.values()),
        "skipped": len(skipped),
        "duplicates": sum(len(group["dropped"]) for group in plan.duplicates),
        "converted": len(converted),
        "resized": sum(sidecars[f]["resized"] for f in sidecars),
    }
    balance = accounting["written"] + accounting["skipped"] + accounting["duplicates"]
    if balance != plan.inputs_found:
        # A bug, never a user error: refuse to write a manifest that loses images.
        raise RuntimeError(
            f"accounting mismatch: written {accounting['written']} + skipped "
            f"{accounting['skipped']} + duplicates {accounting['duplicates']} != "
            f"inputs found {plan.inputs_found}"
        )
    reasons = collections.Counter(entry["reason"].split(" (")[0] for entry in skipped)
    return {
        "format_version": schema.FORMAT_VERSION,
        "class_names": list(schema.CLASS_NAMES),
        "settings": plan.settings,
        "plan_digest": digest,
        "inputs": plan.inputs,
        "inputs_found": plan.inputs_found,
        "accounting": accounting,
        "skip_reasons": dict(sorted(reasons.items())),
        "stored_max_short_side": options.max_short_side,
        "splits": splits,
        "skipped": skipped,
        "duplicates": plan.duplicates,
        "converted": converted,
    }


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """What ``convert`` did.

    Attributes:
      manifest: The manifest as written (including the ``run`` timing entry).
      state: ``"fresh"``, ``"resume"`` or ``"done"`` (nothing left to do).
      shards_reused: Finished shards kept from an interrupted run.
      images_processed: Images read and converted by this run.
      seconds: Wall time of this run.
    """

    manifest: dict[str, Any]
    state: str
    shards_reused: int
    images_processed: int
    seconds: float


def convert(options: ConvertOptions) -> ConversionResult:
    """Converts the inputs into shards + manifest in ``options.output_dir``.

    Rerunning with the same options after an interruption finishes the job; with
    everything already done it only reports. See the module docstring.

    Args:
      options: What to convert and how.

    Returns:
      What was done, with the manifest.

    Raises:
      sources.InputError: For a missing, empty or unreadable input.
      OutputDirError: If ``output_dir`` holds a different conversion (and no overwrite).
    """
    start = time.monotonic()
    with _mapper(options.num_workers) as pool_map:
        plan = _make_plan(options, pool_map, options.progress)
        digest = plan.digest
        state = _check_output_dir(options, plan, digest)
        manifest_file = schema.manifest_path(options.output_dir)
        if state == "done":
            with open(manifest_file) as f:
                manifest = json.load(f)
            logging.info(
                "%s already holds this exact conversion; nothing to do", options.output_dir
            )
            return ConversionResult(manifest, state, 0, 0, time.monotonic() - start)
        os.makedirs(os.path.join(options.output_dir, WORK_DIR), exist_ok=True)
        _write_json_atomically(
            os.path.join(options.output_dir, WORK_DIR, PLAN_NAME),
            {"plan_digest": digest, "settings": plan.settings, "inputs_found": plan.inputs_found},
        )
        sidecars, pending = {}, []
        for split in schema.SPLITS:
            for index, shard_file in enumerate(plan.shard_files(split)):
                sidecar = _finished_sidecar(options.output_dir, shard_file, digest)
                if sidecar is None:
                    pending.append((split, index))
                else:
                    sidecars[shard_file] = sidecar
        reused = len(sidecars)
        if reused:
            logging.info(
                "resuming: %d finished shard(s) reused, %d to write", len(sidecars), len(pending)
            )
        processed = _write_shards(plan, digest, pending, options, pool_map)
    for split, index in pending:
        shard_file = plan.shard_files(split)[index]
        with open(_sidecar_path(options.output_dir, shard_file)) as f:
            sidecars[shard_file] = json.load(f)
    manifest = _manifest(plan, digest, sidecars, options)
    seconds = time.monotonic() - start
    # Timing lives under "run" only, so two runs of the same conversion differ only there.
    manifest["run"] = {
        "seconds": round(seconds, 3),
        "images_processed": processed,
        "images_per_second": round(processed / max(seconds, 1e-9), 1),
        "num_workers": options.num_workers,
        "shards_reused": reused,
    }
    _write_json_atomically(manifest_file, manifest)
    shutil.rmtree(os.path.join(options.output_dir, WORK_DIR), ignore_errors=True)
    return ConversionResult(manifest, "resume" if reused else "fresh", reused, processed, seconds)
