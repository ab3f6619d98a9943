"""The conversion: inputs -> plan (split, dedup, shards) -> shards -> manifest.

Two passes:

1. *Plan* (``records.plan``). List every input file (``records.inputs.sources``), read and
   sha256 each one (in parallel), then decide everything up front, as a pure function of
   the hashes and the settings: duplicates, the split, and the shards. The plan's digest
   names this exact conversion.
2. *Write.* Photos are validated/converted (``records.photo``, in batches on threads:
   ``records.stored_photo.prepare_many``) in plan order; this process writes each shard
   to ``<shard>.tmp``, records its counts in a sidecar under ``.make_records/``, then
   renames it to its final name. So a shard under its final name is always complete,
   and a rerun of the same command (same plan digest) reuses finished shards and writes
   only the rest. ``manifest.json`` is written last. A write
   that fails (disk full ...) raises ``WriteError`` and leaves the folder resumable.

One run at a time per output folder: the whole conversion holds ``core.lock``'s
lock on it, so a second run stops at once with ``OutputDirError``.

Every input ends up written, skipped (with its reason) or dropped as a duplicate, and
the writer checks that these add up to the inputs found, and that every folder found
was read or skipped, before writing the manifest.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from core import files
from core.progress import Progress
from records import outdir, photo, schema, stored_photo, workers
from records.convert_options import ConvertOptions
from records.inputs import sources
from records.outdir import PLAN_NAME, TMP_SUFFIX, WORK_DIR
from records.photo import StoreSettings
from records.photo_batches import BadImage
from records.plan import Plan, make_plan, skip_entry

# Part of this module's interface: make_records catches writer.OutputDirError.
OutputDirError = outdir.OutputDirError


class WriteError(OSError):
    """Writing into ``--output_dir`` failed (disk full, I/O error ...); rerunning resumes."""


def _tasks(plan: Plan, pending: list[tuple[str, int]]):
    for split, index in pending:
        yield from plan.shards[split][index]


def checked_reader(expected_sha256: Callable[[Any], str], read: Callable[[Any], bytes]):
    """``read`` that refuses bytes whose sha256 is not the one the plan was built on
    (``BadImage``: the file changed between the passes, so its record would not match)."""

    def read_checked(item) -> bytes:
        data = read(item)
        if hashlib.sha256(data).hexdigest() != expected_sha256(item):
            raise BadImage("file changed while the conversion ran (sha256 differs from pass 1)")
        return data

    return read_checked


def _trace(settings: StoreSettings) -> None:
    """Traces and first runs ``records.photo``'s batch function for ``settings`` (under a
    second: the graph is built and optimised on the first call)."""
    tiny = tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8))
    photo.prepare_batch_function(settings)(tf.reshape(tiny, [1]))


def _write_shard(plan: Plan, digest: str, split: str, index: int, results, bar, output_dir):
    """Writes one shard (temp name, sidecar, rename); returns its sidecar."""
    shard_file = plan.shard_files(split)[index]
    final = os.path.join(output_dir, shard_file)
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
                sidecar["skipped"].append(skip_entry(source, payload))
                continue
            example = schema.make_example(
                encoded=payload.encoded,
                label=source.label,
                filename=source.name,  # stored as the name's original bytes
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
                    {
                        "source": sources.display_name(source.name),
                        "conversion": payload.conversion,
                    }
                )
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    sidecar["num_examples"] = written
    sidecar["sha256"] = files.sha256_file(tmp)
    # Sidecar first, then the rename: a final name without a valid sidecar is
    # rewritten on resume, and a sidecar without its shard is ignored.
    files.write_json_atomically(outdir.sidecar_path(output_dir, shard_file), sidecar)
    os.replace(tmp, final)
    logging.info("wrote %s (%d examples)", shard_file, written)
    return sidecar


def _write_shards(
    plan: Plan, digest: str, pending: list[tuple[str, int]], options: ConvertOptions
) -> int:
    """Writes the pending shards; returns the number of images processed.

    Raises:
      WriteError: If a shard or its sidecar cannot be written. Shards finished before
        it are kept, its temp file is removed, so a rerun resumes.
    """
    total = sum(len(plan.shards[split][index]) for split, index in pending)
    # Photos are prepared by records.photo's TF ops (the same function the SavedModel
    # serves) on threads, in plan order; each is read again and checked against the
    # plan's sha256 so that a record matches its plan.
    read = checked_reader(lambda task: task[1], lambda task: task[0].read())
    settings = StoreSettings(options.max_short_side, options.jpeg_quality)
    # One thread more than cores: while one waits on the GIL or the disk, the others run.
    results = stored_photo.prepare_many(
        _tasks(plan, pending), read, settings, options.num_workers + 1
    )
    bar = Progress("writing", total, options.progress)
    try:
        for split, index in pending:
            try:
                _write_shard(plan, digest, split, index, results, bar, options.output_dir)
            except (tf.errors.OpError, OSError) as e:
                # TF's errors are no OSError: without this a full disk is a TF traceback.
                detail = e.message if isinstance(e, tf.errors.OpError) else str(e)
                raise WriteError(
                    f"cannot write {plan.shard_files(split)[index]} in --output_dir "
                    f"{options.output_dir}: {detail.strip()}; free space or choose another "
                    "--output_dir, then rerun the same command: finished shards are kept"
                ) from e
    finally:
        bar.close()
        for name in os.listdir(options.output_dir):
            if name.endswith(TMP_SUFFIX) and schema.parse_shard_name(name[: -len(TMP_SUFFIX)]):
                os.remove(os.path.join(options.output_dir, name))
    return total


def reason_kind(reason: str) -> str:
    """What kind of skip a reason is, for the manifest's ``skip_reasons`` counts.

    A reason is its kind, then details: numbers, names and causes after the first ":",
    "(", "[" or "," ("image too large: 9000x9000 = ... (limit ...)", "truncated JPEG
    (...)", "unreadable: [Errno 13] ..."). Names that come earlier (a quoted label, a
    folder path such as ``dogs/``) are replaced by "...", so that reasons of one kind count
    under one key: "image too large", "same folder as ...", "label ... is not a class name".
    """
    kind = re.split(r"[:(\[,]", reason, maxsplit=1)[0]
    return re.sub(r"'[^']*'|\S*/\S*", "...", kind).strip()


def _manifest(plan: Plan, digest: str, sidecars: dict[str, dict[str, Any]]) -> dict:
    splits, skipped, converted = {}, list(plan.skipped), []
    # The plan's splits, not schema.SPLITS: a conversion without a test split lists none,
    # so its manifest is the one it would have been before the test split existed.
    for split in plan.splits:
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
        # A folder that could not be read is also one input found and one skipped.
        "folders_found": plan.folders["found"],
        "folders_read": plan.folders["read"],
        "folders_skipped": plan.folders["skipped"],
    }
    balance = accounting["written"] + accounting["skipped"] + accounting["duplicates"]
    folders_listed = accounting["folders_read"] + accounting["folders_skipped"]
    if balance != plan.inputs_found or folders_listed != accounting["folders_found"]:
        # A bug, never a user error: refuse to write a manifest that loses images.
        raise RuntimeError(
            f"accounting mismatch: written {accounting['written']} + skipped "
            f"{accounting['skipped']} + duplicates {accounting['duplicates']} should be "
            f"inputs found {plan.inputs_found}; folders read {accounting['folders_read']} + "
            f"skipped {accounting['folders_skipped']} should be folders found "
            f"{accounting['folders_found']}"
        )
    reasons = collections.Counter(reason_kind(entry["reason"]) for entry in skipped)
    return {
        "format_version": schema.FORMAT_VERSION,
        "class_names": list(schema.CLASS_NAMES),
        "settings": plan.settings,
        "plan_digest": digest,
        "inputs": plan.inputs,
        "inputs_found": plan.inputs_found,
        "accounting": accounting,
        "skip_reasons": dict(sorted(reasons.items())),
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
      OutputDirError: If ``output_dir`` holds a different conversion (and no overwrite),
        or another conversion is running into it.
      WriteError: If writing fails (disk full ...); rerunning resumes.
    """
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        pool_map = stack.enter_context(workers.mapper(options.num_workers))
        # Locked after the pool has forked its workers, so that only this process holds
        # the lock: it is released the moment this process ends, however it ends.
        outdir.lock_output_dir(options.output_dir, stack)
        # Tracing the photo function takes a second or two: done while the plan hashes.
        settings = StoreSettings(options.max_short_side, options.jpeg_quality)
        tracing = threading.Thread(target=_trace, args=(settings,), daemon=True)
        tracing.start()
        # Joined on every way out: a refusal (OutputDirError) that ends the process
        # while TensorFlow still traces on this thread aborts it (exit 134, not 2).
        stack.callback(tracing.join)
        plan = make_plan(
            options, pool_map, lambda what, total: Progress(what, total, options.progress)
        )
        digest = plan.digest
        state = outdir.check_output_dir(options, plan, digest)
        manifest_file = schema.manifest_path(options.output_dir)
        if state == "done":
            with open(manifest_file) as f:
                manifest = json.load(f)
            logging.info(
                "%s already holds this exact conversion; nothing to do", options.output_dir
            )
            return ConversionResult(manifest, state, 0, 0, time.monotonic() - start)
        os.makedirs(os.path.join(options.output_dir, WORK_DIR), exist_ok=True)
        files.write_json_atomically(
            os.path.join(options.output_dir, WORK_DIR, PLAN_NAME),
            {"plan_digest": digest, "settings": plan.settings, "inputs_found": plan.inputs_found},
        )
        sidecars, pending = {}, []
        for split in plan.splits:
            for index, shard_file in enumerate(plan.shard_files(split)):
                sidecar = outdir.finished_sidecar(options.output_dir, shard_file, digest)
                if sidecar is None:
                    pending.append((split, index))
                else:
                    sidecars[shard_file] = sidecar
        reused = len(sidecars)
        if reused:
            logging.info(
                "resuming: %d finished shard(s) reused, %d to write", len(sidecars), len(pending)
            )
        # The writer's threads call the function only once it has been traced and run:
        # first called by all of them at once, its first run took 1.0 s instead of 0.5 s
        # (the sample at full size: 1,567 -> 1,972 images/s, load ~1).
        tracing.join()
        processed = _write_shards(plan, digest, pending, options)
        for split, index in pending:
            shard_file = plan.shard_files(split)[index]
            with open(outdir.sidecar_path(options.output_dir, shard_file)) as f:
                sidecars[shard_file] = json.load(f)
        manifest = _manifest(plan, digest, sidecars)
        seconds = time.monotonic() - start
        # Timing lives under "run" only, so two runs of the same conversion differ only there.
        manifest["run"] = {
            "seconds": round(seconds, 3),
            "images_processed": processed,
            "images_per_second": round(processed / max(seconds, 1e-9), 1),
            "num_workers": options.num_workers,
            "shards_reused": reused,
        }
        files.write_json_atomically(manifest_file, manifest)
        shutil.rmtree(os.path.join(options.output_dir, WORK_DIR), ignore_errors=True)
        return ConversionResult(
            manifest, "resume" if reused else "fresh", reused, processed, seconds
        )
