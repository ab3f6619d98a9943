"""Tests for records.writer: round trip, split, dedup, sharding, accounting, resume rules."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from conftest import (
    REPO_ROOT,
    convert,
    make_jpeg_bytes,
    read_records,
    run_command,
    subprocess_env,
    write_kaggle_folder,
)
from core import lock
from records import outdir, plan, schema, verify, writer
from records.inputs import folders, sources


def shard_bytes(records_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(records_dir).glob("*.tfrecord"))}


def manifest_without_run(records_dir) -> dict:
    manifest = json.loads((pathlib.Path(records_dir) / schema.MANIFEST_NAME).read_text())
    manifest.pop("run")
    return manifest


@pytest.mark.parametrize("test_fraction", [0.0, 0.3], ids=["train_val", "with_test"])
def test_round_trip_bytes_labels_counts(tmp_path, test_fraction):
    folder = tmp_path / "train"
    paths = write_kaggle_folder(folder, 12)
    result = convert([folder], tmp_path / "out", val_fraction=0.3, test_fraction=test_fraction)
    assert result.state == "fresh"
    records = read_records(tmp_path / "out")
    by_name = {r[schema.FILENAME].decode(): r for split in records.values() for r in split}
    assert len(by_name) == len(paths) == 24
    for path in paths:
        record = by_name[f"train/{path.name}"]
        data = path.read_bytes()
        assert record[schema.ENCODED] == data  # original bytes, untouched
        assert record[schema.SHA256].decode() == hashlib.sha256(data).hexdigest()
        assert record[schema.LABEL] == schema.CLASS_NAMES.index(path.name.split(".")[0])
        assert record[schema.LABEL_TEXT].decode() == path.name.split(".")[0]
        assert (record[schema.HEIGHT], record[schema.WIDTH]) == (48, 64)
    manifest = result.manifest
    assert manifest["class_names"] == ["cat", "dog"]
    # A test split only when asked for; without one the manifest lists none (as before).
    assert list(manifest["splits"]) == ["train", "val", "test"][: 3 if test_fraction else 2]
    for split, info in manifest["splits"].items():
        assert info["shards"], f"no {split} shards"
        assert (
            info["num_examples"]
            == len(records[split])
            == sum(s["num_examples"] for s in info["shards"])
        )
        labels = [int(r[schema.LABEL]) for r in records[split]]
        assert info["class_counts"] == {"cat": labels.count(0), "dog": labels.count(1)}
        for shard in info["shards"]:
            data = (tmp_path / "out" / shard["file"]).read_bytes()
            assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["accounting"] == {
        "inputs_found": 24,
        "written": 24,
        "skipped": 0,
        "duplicates": 0,
        "converted": 0,
        "resized": 0,
        "folders_found": 1,
        "folders_read": 1,
        "folders_skipped": 0,
    }
    assert "stored_max_short_side" not in manifest  # the same as settings.max_short_side
    # The split follows the rule exactly, and shards are sha-sorted (classes mixed).
    for split, rows in records.items():
        shas = [r[schema.SHA256].decode() for r in rows]
        assert all(plan.split_of(sha, 0.3, test_fraction) == split for sha in shas)
        assert shas == sorted(shas)
    # Nothing but shards and the manifest is left behind.
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [s["file"] for i in manifest["splits"].values() for s in i["shards"]] + ["manifest.json"]
    )
    assert verify.verify_records(str(tmp_path / "out")) == []


def test_split_is_a_pure_function_of_the_hash():
    assert plan.split_of("0" * 64, 0.2) == "val"
    assert plan.split_of("f" * 64, 0.2) == "train"
    threshold = int(0.2 * 2**64)
    assert plan.split_of(f"{threshold:016x}" + "f" * 48, 0.2) == "train"
    assert plan.split_of(f"{threshold - 1:016x}" + "f" * 48, 0.2) == "val"
    assert plan.split_of("0" * 64, 0.0) == "train"
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    val = sum(plan.split_of(s, 0.2) == "val" for s in shas)
    assert 320 < val < 480  # ~20 %


@pytest.mark.slow
def test_same_records_whatever_the_worker_count(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 10)
    # Re-encoding too, so the converted bytes are covered, not only copies.
    convert([folder], tmp_path / "one", num_workers=1, max_short_side=32)
    convert([folder], tmp_path / "two", num_workers=2, max_short_side=32)
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    one, two = manifest_without_run(tmp_path / "one"), manifest_without_run(tmp_path / "two")
    assert one == two


def test_duplicates_written_once_never_straddle_and_are_listed(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 6)
    shutil.copy(folder / "dog.2.jpg", folder / "dog.99.jpg")
    shutil.copy(folder / "dog.2.jpg", folder / "dog.100.jpg")
    result = convert([folder], tmp_path / "out", val_fraction=0.5)
    records = read_records(tmp_path / "out")
    names = [r[schema.FILENAME].decode() for rows in records.values() for r in rows]
    sha = hashlib.sha256((folder / "dog.2.jpg").read_bytes()).hexdigest()
    assert result.manifest["duplicates"] == [
        {
            "sha256": sha,
            "kept": "train/dog.100.jpg",
            "dropped": ["train/dog.2.jpg", "train/dog.99.jpg"],
        }
    ]
    assert "train/dog.100.jpg" in names and "train/dog.2.jpg" not in names
    all_shas = [r[schema.SHA256] for rows in records.values() for r in rows]
    assert len(all_shas) == len(set(all_shas)) == 12
    assert result.manifest["accounting"]["duplicates"] == 2


def test_copies_with_conflicting_labels_are_all_skipped(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 3)
    shutil.copy(folder / "dog.1.jpg", folder / "cat.77.jpg")
    result = convert([folder], tmp_path / "out")
    reasons = {e["source"]: e["reason"] for e in result.manifest["skipped"]}
    assert set(reasons) == {"train/dog.1.jpg", "train/cat.77.jpg"}
    assert all("different labels" in r for r in reasons.values())
    assert result.manifest["accounting"]["written"] == 5


def test_zip_and_folder_give_identical_records(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 8)
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as z:  # Kaggle's layout: train/cat.0.jpg ...
        for path in sorted(folder.iterdir()):
            z.write(path, f"train/{path.name}")
    convert([folder], tmp_path / "from_folder")
    # Two workers: each forked worker opens its own handle on the zip.
    convert([archive], tmp_path / "from_zip", num_workers=2)
    assert shard_bytes(tmp_path / "from_folder") == shard_bytes(tmp_path / "from_zip")
    folder_manifest = manifest_without_run(tmp_path / "from_folder")
    zip_manifest = manifest_without_run(tmp_path / "from_zip")
    assert folder_manifest["splits"] == zip_manifest["splits"]
    assert zip_manifest["inputs"][0]["kind"] == "zip"


def test_csv_and_class_folders_hold_the_same_images(tmp_path):
    kaggle = tmp_path / "train"
    paths = write_kaggle_folder(kaggle, 5)
    per_class = tmp_path / "PetImages"
    rows = []
    for path in paths:
        label = path.name.split(".")[0]
        target = per_class / f"{label.capitalize()}s" / path.name.split(".", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        rows.append({"filename": f"train/{path.name}", "label": schema.CLASS_NAMES.index(label)})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)

    def content(records_dir):
        records = read_records(records_dir)
        return {
            split: [(r[schema.SHA256], r[schema.LABEL], r[schema.ENCODED]) for r in rows]
            for split, rows in records.items()
        }

    convert([kaggle], tmp_path / "a")
    convert([tmp_path / "labels.csv"], tmp_path / "b")
    convert([per_class], tmp_path / "c")
    assert content(tmp_path / "a") == content(tmp_path / "b") == content(tmp_path / "c")
    # The CSV names records exactly like the folder does, so the shards are identical.
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")


def test_every_bad_input_is_accounted_for(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 4)
    good = make_jpeg_bytes(40, 40, seed=50)
    (folder / "cat.10.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "cat.11.jpg").write_bytes(b"")  # zero bytes
    (folder / "cat.12.jpg").write_bytes(b"<html>404 not found</html>")  # non-image
    os.symlink(folder / "gone.jpg", folder / "dog.10.jpg")  # unreadable
    (folder / "kitten.1.jpg").write_bytes(good)  # no recognisable label
    png = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(png, format="PNG")
    (folder / "dog.11.jpg").write_bytes(png.getvalue())  # PNG named .jpg -> converted
    gif = io.BytesIO()
    Image.new("P", (10, 12), 3).save(gif, format="GIF")
    (folder / "dog.12.jpg").write_bytes(gif.getvalue())  # GIF named .jpg -> converted
    cmyk = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk, format="JPEG")
    (folder / "cat.13.jpg").write_bytes(cmyk.getvalue())  # CMYK -> RGB
    gray = io.BytesIO()
    Image.new("L", (16, 16), 90).save(gray, format="JPEG")
    (folder / "cat.14.jpg").write_bytes(gray.getvalue())  # grayscale -> RGB

    result = convert([folder], tmp_path / "out")
    manifest = result.manifest
    reasons = {e["source"].split("/")[-1]: e["reason"] for e in manifest["skipped"]}
    assert set(reasons) == {"cat.10.jpg", "cat.11.jpg", "cat.12.jpg", "dog.10.jpg", "kitten.1.jpg"}
    assert reasons["cat.10.jpg"].startswith("truncated JPEG")
    assert reasons["cat.11.jpg"] == "empty file (0 bytes)"
    assert reasons["cat.12.jpg"].startswith("not an image")
    assert (
        reasons["dog.10.jpg"].startswith("unreadable") and "No such file" in reasons["dog.10.jpg"]
    )
    assert reasons["kitten.1.jpg"].startswith("no recognisable label")
    assert {e["source"].split("/")[-1]: e["conversion"] for e in manifest["converted"]} == {
        "dog.11.jpg": "PNG -> JPEG",
        "dog.12.jpg": "GIF -> JPEG",
        "cat.13.jpg": "JPEG CMYK -> RGB",
        "cat.14.jpg": "JPEG L -> RGB",
    }
    accounting = manifest["accounting"]
    assert accounting["inputs_found"] == 8 + 9
    assert accounting["written"] == 8 + 4 and accounting["skipped"] == 5
    # Every written image decodes as RGB JPEG to its recorded size.
    for rows in read_records(tmp_path / "out").values():
        for r in rows:
            image = tf.io.decode_jpeg(r[schema.ENCODED], channels=3)
            assert tuple(image.shape) == (r[schema.HEIGHT], r[schema.WIDTH], 3)
            assert Image.open(io.BytesIO(r[schema.ENCODED])).mode == "RGB"


def test_default_shard_counts():
    assert plan.default_num_shards("train", 20_000, 450 * 2**20) == 4
    assert plan.default_num_shards("train", 100_000, 1500 * 2**20) == 10
    assert plan.default_num_shards("val", 5_000, 110 * 2**20) == 2
    assert plan.default_num_shards("val", 1, 10) == 1  # never an empty shard by default
    assert plan.default_num_shards("val", 0, 0) == 0


def test_explicit_shard_counts_and_no_val(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 5)
    result = convert([folder], tmp_path / "out", train_shards=3, val_fraction=0.0)
    splits = result.manifest["splits"]
    assert [s["file"] for s in splits["train"]["shards"]] == [
        schema.shard_name("train", i, 3) for i in range(3)
    ]
    assert [s["num_examples"] for s in splits["train"]["shards"]] == [3, 3, 4]
    assert splits["val"] == {"num_examples": 0, "class_counts": {"cat": 0, "dog": 0}, "shards": []}


def test_rerun_is_a_no_op_and_changes_need_overwrite(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 4)
    out = tmp_path / "out"
    convert([folder], out)
    before = shard_bytes(out)
    again = convert([folder], out)
    assert again.state == "done" and again.images_processed == 0
    assert shard_bytes(out) == before
    with pytest.raises(
        writer.OutputDirError, match="max_short_side: None there, 16 now.*--overwrite"
    ):
        convert([folder], out, max_short_side=16)
    (folder / "dog.9.jpg").write_bytes(make_jpeg_bytes(seed=99))
    with pytest.raises(writer.OutputDirError, match="different input files"):
        convert([folder], out)
    result = convert([folder], out, max_short_side=16, overwrite=True)
    assert result.state == "fresh" and result.manifest["accounting"]["written"] == 9
    assert result.manifest["accounting"]["resized"] == 9
    assert shard_bytes(out) != before


def test_refuses_shards_it_did_not_make(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"someone else's")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(writer.OutputDirError, match="no record of how they were made"):
        convert([folder], out)
    convert([folder], out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"  # --overwrite deletes only our files
    assert not (out / "train-00000-of-00001.tfrecord").exists()
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(writer.OutputDirError, match="not a directory"):
        convert([folder], file)


@pytest.mark.parametrize("settings", [{}, {"test_fraction": 0.25}], ids=["train_val", "with_test"])
def test_resume_reuses_finished_shards_and_redoes_the_rest(tmp_path, settings):
    """In-process resume bookkeeping; the subprocess SIGKILL test is in test_make_records."""
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 8)
    reference = tmp_path / "reference"
    convert([folder], reference, **settings)
    out = tmp_path / "out"
    convert([folder], out, **settings)
    manifest = json.loads((out / schema.MANIFEST_NAME).read_text())
    # In split order (the file's keys are sorted: test would come first).
    splits = [split for split in schema.SPLITS if split in manifest["splits"]]
    files = [s["file"] for split in splits for s in manifest["splits"][split]["shards"]]
    assert ("test" in splits) == bool(settings)
    # Rebuild the state of a run killed after two shards: plan + their sidecars, a
    # half-written temp file of the third, no manifest.
    work = out / writer.WORK_DIR
    work.mkdir()
    (work / writer.PLAN_NAME).write_text(json.dumps({"plan_digest": manifest["plan_digest"]}))
    for shard in manifest["splits"]["train"]["shards"][:2]:
        sidecar = {
            "plan_digest": manifest["plan_digest"],
            "file": shard["file"],
            "num_examples": shard["num_examples"],
            "sha256": shard["sha256"],
            "class_counts": shard["class_counts"],
            "skipped": [],
            "converted": [],
            "resized": 0,
        }
        (work / (shard["file"] + ".json")).write_text(json.dumps(sidecar))
    for name in files[2:]:
        (out / name).unlink()
    (out / (files[2] + writer.TMP_SUFFIX)).write_bytes(b"partial")
    (out / schema.MANIFEST_NAME).unlink()
    (out / files[1]).write_bytes(b"corrupted after it was finished")  # must be redone

    result = convert([folder], out, **settings)
    assert result.state == "resume" and result.shards_reused == 1
    assert shard_bytes(out) == shard_bytes(reference)
    assert manifest_without_run(out) == manifest_without_run(reference)
    assert sorted(os.listdir(out)) == sorted(files + [schema.MANIFEST_NAME])


def test_missing_or_empty_input_raises_input_error(tmp_path):
    with pytest.raises(sources.InputError, match="does not exist"):
        convert([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.InputError, match="holds no files"):
        convert([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # made for the lock, removed again


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"train_shards": 0}, "train_shards"),
        ({"max_short_side": -5}, "max_short_side"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"num_workers": 0}, "num_workers"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        writer.ConvertOptions(inputs=("x",), output_dir="y", **kwargs)


def _folder_walked_like_os_walk(root: str) -> folders.Walk:
    """The old listing: os.walk without followlinks sees a symlinked folder, never enters it."""
    walk = folders.Walk(folders_found=1)
    for dirpath, dirnames, filenames in os.walk(root):
        walk.folders_read += 1
        walk.folders_found += len(dirnames)
        walk.files += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
    walk.files.sort()
    return walk


def test_a_folder_dropped_without_a_trace_breaks_the_accounting(tmp_path, monkeypatch):
    (tmp_path / "real_cats").mkdir()
    (tmp_path / "real_cats" / "1.jpg").write_bytes(make_jpeg_bytes(seed=1))
    (tmp_path / "in" / "dogs").mkdir(parents=True)
    (tmp_path / "in" / "dogs" / "1.jpg").write_bytes(make_jpeg_bytes(seed=2))
    os.symlink("../real_cats", tmp_path / "in" / "cats")
    monkeypatch.setattr(folders, "walk", _folder_walked_like_os_walk)
    with pytest.raises(
        RuntimeError, match="folders read 2 \\+ skipped 0 should be folders found 3"
    ):
        convert([tmp_path / "in"], tmp_path / "out")
    assert not (tmp_path / "out" / schema.MANIFEST_NAME).exists()


def _failing_writer_class(fail_at: int):
    """A TFRecordWriter whose ``fail_at``-th write (over all shards) fails like a full disk."""
    real = tf.io.TFRecordWriter
    calls = {"writes": 0}

    class FailingWriter:
        def __init__(self, path, options=None):
            self._writer = real(path, options)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self._writer.close()

        def write(self, record):
            calls["writes"] += 1
            if calls["writes"] == fail_at:
                raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
            self._writer.write(record)

    return FailingWriter


def test_full_disk_is_a_write_error_and_the_folder_stays_resumable(tmp_path, monkeypatch):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 12)
    reference = tmp_path / "reference"
    convert([folder], reference, train_shards=4, val_shards=2)
    out = tmp_path / "out"
    monkeypatch.setattr(tf.io, "TFRecordWriter", _failing_writer_class(fail_at=9))
    with pytest.raises(writer.WriteError) as error:
        convert([folder], out, train_shards=4, val_shards=2)
    monkeypatch.undo()
    message = str(error.value)
    assert isinstance(error.value, OSError)  # make_records: logged, exit 1, no traceback
    assert f"in --output_dir {out}: No space left on device" in message
    assert message.startswith("cannot write train-0000")
    assert "free space or choose another --output_dir, then rerun the same command" in message
    # Resumable: finished shards with their sidecars, no temp file, no manifest.
    left = sorted(os.listdir(out))
    finished = [name for name in left if schema.parse_shard_name(name)]
    assert finished and not any(name.endswith(writer.TMP_SUFFIX) for name in left)
    assert not (out / schema.MANIFEST_NAME).exists()
    assert all((out / writer.WORK_DIR / f"{name}.json").exists() for name in finished)

    result = convert([folder], out, train_shards=4, val_shards=2)
    assert result.state == "resume" and result.shards_reused == len(finished)
    assert shard_bytes(out) == shard_bytes(reference)
    assert manifest_without_run(out) == manifest_without_run(reference)
    assert verify.verify_records(str(out)) == []


def test_a_second_run_into_the_same_folder_stops_at_once(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 3)
    out = tmp_path / "out"
    convert([folder], out)
    assert not (out / lock.LOCK_NAME).exists()  # removed when the run ends
    before = shard_bytes(out)
    # flock locks belong to an open file, so this process can stand in for another run.
    with lock.DirectoryLock(str(out), command="make_records", flag="--output_dir"):
        with pytest.raises(writer.OutputDirError) as error:
            convert([folder], out, max_short_side=16, overwrite=True)
        assert (out / lock.LOCK_NAME).read_text() == f"{os.getpid()}\nmake_records\n"
    assert str(error.value) == (
        f"--output_dir {out} is in use by another make_records run (pid {os.getpid()}); "
        "wait for it to finish or use another --output_dir"
    )
    assert shard_bytes(out) == before  # --overwrite deleted nothing
    # A lock file left by a killed run (no process holds it) neither blocks a run nor
    # counts as a file of ours, and verify_records does not mind it.
    (out / lock.LOCK_NAME).write_text("999999\n")
    assert outdir.our_files(str(out)) == sorted([*before, schema.MANIFEST_NAME])
    assert verify.verify_records(str(out)) == []
    result = convert([folder], out, max_short_side=16, overwrite=True)
    assert result.state == "fresh" and result.manifest["accounting"]["resized"] == 6
    assert not (out / lock.LOCK_NAME).exists()
    assert verify.verify_records(str(out)) == []


@pytest.mark.slow
def test_two_processes_into_one_folder(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 3)
    out = tmp_path / "out"
    convert([folder], out)
    before = shard_bytes(out)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from core import lock\n"
            "with lock.DirectoryLock(sys.argv[1], command='make_records', flag='--output_dir'):\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.read()  # Holds the lock until the test kills it.\n",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        second = run_command(
            "records.make_records", f"--input={folder}", f"--output_dir={out}", "--overwrite"
        )
    finally:
        holder.kill()
        holder.wait()
    output = second.stdout + second.stderr
    assert second.returncode == 2, output
    assert f"--output_dir {out} is in use by another make_records run (pid {holder.pid})" in output
    assert "Traceback" not in output
    assert shard_bytes(out) == before
    assert verify.verify_records(str(out)) == []


@pytest.mark.parametrize(
    "reason, kind",
    [
        ("image too large: 9000x9000 = 81000000 pixels (limit 65000000)", "image too large"),
        ("image too large: 12000x8000 = 96000000 pixels (limit 65000000)", "image too large"),
        ("truncated JPEG (image file is truncated)", "truncated JPEG"),
        ("unreadable: [Errno 13] Permission denied: '/x'", "unreadable"),
        (
            "label 'bird' is not a class name ['cat', 'dog'] or index",
            "label ... is not a class name",
        ),
    ],
)
def test_skip_reasons_group_by_kind_not_by_details(reason, kind):
    assert writer.reason_kind(reason) == kind
