"""What a records folder holds while a conversion runs, and whether a run may use it.

``records.writer`` writes shards under a temp name (``TMP_SUFFIX``), keeps per-shard
sidecars and the plan under ``WORK_DIR``, and writes ``manifest.json`` last. This
module reads that state back: whether the folder is free (``lock_output_dir``), and
whether it holds nothing of ours, this same conversion finished, this conversion half
done (resume), or a different one (refused without ``--overwrite``).

The lock file (``core.lock``) is not one of "our files": ``--overwrite`` never
removes it, and ``verify_records`` only looks at shard names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any

from absl import logging

from core import lock
from core.files import TMP_SUFFIX, sha256_file
from records import schema
from records.convert_options import ConvertOptions
from records.plan import Plan

WORK_DIR = ".make_records"
PLAN_NAME = "plan.json"


class OutputDirError(ValueError):
    """``--output_dir`` holds something this run must not overwrite or cannot use."""


def sidecar_path(output_dir: str, shard_file: str) -> str:
    """Where a finished shard's counts are kept until the manifest is written."""
    return os.path.join(output_dir, WORK_DIR, shard_file + ".json")


def finished_sidecar(output_dir: str, shard_file: str, digest: str) -> dict[str, Any] | None:
    """The sidecar of a shard finished under this plan, or None if it must be (re)written."""
    path = sidecar_path(output_dir, shard_file)
    final = os.path.join(output_dir, shard_file)
    if not (os.path.exists(path) and os.path.exists(final)):
        return None
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if sidecar.get("plan_digest") != digest or sidecar.get("sha256") != sha256_file(final):
        return None
    return sidecar


def our_files(output_dir: str) -> list[str]:
    """Files in output_dir that a conversion writes (what --overwrite may delete).

    Not the lock file (``core.lock``): the running conversion holds it.
    """
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


def lock_output_dir(output_dir: str, stack: contextlib.ExitStack) -> None:
    """Creates ``output_dir`` and holds its lock (``core.lock``) until ``stack`` closes.

    Raises:
      OutputDirError: If it is not a directory, or another run holds the lock.
    """
    try:
        stack.enter_context(
            lock.DirectoryLock(output_dir, command="make_records", flag="--output_dir")
        )
    except lock.LockError as e:
        raise OutputDirError(str(e)) from None


def check_output_dir(options: ConvertOptions, plan: Plan, digest: str) -> str:
    """Decides what to do with ``output_dir`` (locked, see ``lock_output_dir``).

    Returns:
      ``"done"``, ``"resume"`` or ``"fresh"``.

    Raises:
      OutputDirError: If it holds a different conversion and ``overwrite`` is off.
    """
    output_dir = options.output_dir
    ours = our_files(output_dir)
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
            for split in plan.splits
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
