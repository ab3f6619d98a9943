"""End-to-end: the odd inputs real photo collections hold, each written or listed with its reason.

Symlinked and unreadable folders, file names that are not UTF-8, zips holding a name
twice (or a member too large, or another archive), phone photos stored sideways with
an EXIF orientation, headers claiming a huge image. Each goes through
``writer.convert``; every conversion must account for every input and pass
``verify_records``.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import convert, make_big_jpeg, make_jpeg_bytes, png_claiming, read_records
from records import photo_header, schema, verify
from records.inputs import labels, zips

PHONE_ROTATION = "EXIF orientation 6 -> rotated 90° clockwise (stored upright)"
HUGE = "image too large: 9000x9000 = 81000000 pixels (limit 65000000)"


def _write(path: pathlib.Path | bytes, data: bytes) -> None:
    """Writes ``data`` to a str/Path or a *bytes* path (for names that are not UTF-8)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _phone_photo() -> bytes:
    """40 wide x 20 tall as stored, red top-left quadrant, EXIF Orientation 6 (turn right)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _zip(path: pathlib.Path, members: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)


def _records_by_name(records_dir) -> dict[bytes, dict]:
    return {r[schema.FILENAME]: r for rows in read_records(records_dir).values() for r in rows}


def _manifest_text_is_plain_utf8(records_dir) -> dict:
    text = (pathlib.Path(records_dir) / schema.MANIFEST_NAME).read_bytes().decode("utf-8")
    assert "\\udc" not in text  # no lone surrogates escaped into the JSON
    return json.loads(text)


def _balanced(accounting: dict) -> bool:
    written_skipped_dropped = (
        accounting["written"] + accounting["skipped"] + accounting["duplicates"]
    )
    folders = accounting["folders_read"] + accounting["folders_skipped"]
    return (
        written_skipped_dropped == accounting["inputs_found"]
        and folders == accounting["folders_found"]
    )


def refuse_private(monkeypatch) -> None:
    """Makes ``private`` folders unlistable (as root, chmod 000 would not stop us)."""
    real_scandir = os.scandir

    def scandir(path="."):
        # Paths only: shutil.rmtree also scans folders, by descriptor.
        if isinstance(path, str) and os.path.basename(path) == "private":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.slow
def test_symlinked_class_folder_is_written(tmp_path):
    real_cats = tmp_path / "real_cats"
    real_cats.mkdir()
    (tmp_path / "in" / "dogs").mkdir(parents=True)
    for i in range(5):
        _write(real_cats / f"{i}.jpg", make_jpeg_bytes(seed=i))
        _write(tmp_path / "in" / "dogs" / f"{i}.jpg", make_jpeg_bytes(seed=100 + i))
    os.symlink("../real_cats", tmp_path / "in" / "cats")
    result = convert([tmp_path / "in"], tmp_path / "out")
    accounting = result.manifest["accounting"]
    assert (accounting["inputs_found"], accounting["written"]) == (10, 10)
    assert (accounting["folders_found"], accounting["folders_read"]) == (3, 3)
    by_name = _records_by_name(tmp_path / "out")
    assert by_name[b"in/cats/3.jpg"][schema.LABEL] == 0
    assert by_name[b"in/cats/3.jpg"][schema.ENCODED] == (real_cats / "3.jpg").read_bytes()
    assert verify.verify_records(str(tmp_path / "out")) == []


def test_unreadable_folders_are_skipped_inputs(tmp_path, monkeypatch):
    root = tmp_path / "in"
    for seed, name in enumerate(("cats", "dogs", "private")):
        (root / name).mkdir(parents=True)
        _write(root / name / f"{name[:3]}.1.jpg", make_jpeg_bytes(seed=seed))
    os.symlink("..", root / "dogs" / "up")  # a loop
    refuse_private(monkeypatch)
    result = convert([root], tmp_path / "out")
    manifest = result.manifest
    assert {e["source"]: e["reason"] for e in manifest["skipped"]} == {
        "in/dogs/up/": "symlink loop: leads back to the input folder itself, which contains "
        "it; not followed",
        "in/private/": "folder cannot be read: Permission denied",
    }
    accounting = manifest["accounting"]
    # Each unreadable folder is one input found and one skipped.
    assert (accounting["inputs_found"], accounting["written"], accounting["skipped"]) == (4, 2, 2)
    assert (accounting["folders_found"], accounting["folders_read"]) == (5, 3)
    assert accounting["folders_skipped"] == 2 and _balanced(accounting)
    assert verify.verify_records(str(tmp_path / "out")) == []


def test_file_names_that_are_not_utf8_are_stored_losslessly(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    base = os.fsencode(folder)
    _write(folder / "cat.1.jpg", make_jpeg_bytes(seed=1))
    _write(folder / "dog.1.jpg", make_jpeg_bytes(seed=2))
    _write(base + b"/cat.\xff.jpg", make_jpeg_bytes(seed=3))  # Latin-1 era name: written
    _write(base + b"/dog.\xfe.jpg", make_jpeg_bytes(seed=2))  # a duplicate of dog.1.jpg
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(png, "PNG")
    _write(base + b"/dog.\xfd.jpg", png.getvalue())  # converted
    _write(base + b"/notes \xe9.txt", b"hello")  # skipped: no label
    result = convert([folder], tmp_path / "out")
    manifest = _manifest_text_is_plain_utf8(tmp_path / "out")
    assert manifest["accounting"] == result.manifest["accounting"]
    by_name = _records_by_name(tmp_path / "out")
    assert sorted(by_name) == [
        b"train/cat.1.jpg",
        b"train/cat.\xff.jpg",
        b"train/dog.1.jpg",
        b"train/dog.\xfd.jpg",
    ]
    with open(base + b"/cat.\xff.jpg", "rb") as f:
        assert by_name[b"train/cat.\xff.jpg"][schema.ENCODED] == f.read()
    assert by_name[b"train/cat.\xff.jpg"][schema.LABEL] == 0
    assert manifest["duplicates"][0]["dropped"] == ["train/dog.\\xfe.jpg"]
    assert manifest["converted"] == [{"source": "train/dog.\\xfd.jpg", "conversion": "PNG -> JPEG"}]
    (skip,) = manifest["skipped"]
    assert skip["source"] == "train/notes \\xe9.txt" and skip["path"].endswith("notes \\xe9.txt")
    assert verify.verify_records(str(tmp_path / "out")) == []


@pytest.mark.slow
def test_zip_entries_sharing_a_name_are_each_accounted_for(tmp_path, monkeypatch):
    monkeypatch.setattr(zips, "MAX_MEMBER_BYTES", 1_000_000)
    first, second = make_jpeg_bytes(seed=1), make_jpeg_bytes(seed=2)
    archive = tmp_path / "train.zip"
    _zip(
        archive,
        [
            ("train/cat.1.jpg", first),
            ("train/cat.1.jpg", second),  # a different picture under the same name
            ("train/dog.1.jpg", make_jpeg_bytes(seed=3)),
            ("train/dog.1.jpg", make_jpeg_bytes(seed=3)),  # the same picture twice
            ("train/dog.2.jpg", b"\0" * 2_000_000),  # over the (lowered) size cap
            ("train/extra.zip", b"PK\x03\x04"),  # a nested archive
        ],
    )
    result = convert([archive], tmp_path / "out", num_workers=2)
    manifest = result.manifest
    by_name = _records_by_name(tmp_path / "out")
    assert by_name[b"train/cat.1.jpg (entry 1 of 2)"][schema.ENCODED] == first
    assert by_name[b"train/cat.1.jpg (entry 2 of 2)"][schema.ENCODED] == second
    assert [(d["kept"], d["dropped"]) for d in manifest["duplicates"]] == [
        ("train/dog.1.jpg (entry 1 of 2)", ["train/dog.1.jpg (entry 2 of 2)"])
    ]
    assert {e["source"]: e["reason"] for e in manifest["skipped"]} == {
        "train/dog.2.jpg": "zip member too large: 2000000 bytes uncompressed (limit 1000000)",
        "train/extra.zip": labels.NESTED_ARCHIVE,
    }
    assert manifest["accounting"]["inputs_found"] == 6 and _balanced(manifest["accounting"])
    assert verify.verify_records(str(tmp_path / "out")) == []


def test_phone_photo_is_stored_upright(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    _write(folder / "dog.1.jpg", _phone_photo())
    result = convert([folder], tmp_path / "out")
    assert result.manifest["converted"] == [
        {"source": "train/dog.1.jpg", "conversion": PHONE_ROTATION}
    ]
    record = _records_by_name(tmp_path / "out")[b"train/dog.1.jpg"]
    assert (record[schema.HEIGHT], record[schema.WIDTH]) == (40, 20)
    pixels = np.asarray(Image.open(io.BytesIO(record[schema.ENCODED])).convert("RGB"), int)
    # Turned right: the stored left side is the top, the stored top is the right.
    np.testing.assert_allclose(pixels[2:18, 12:18].mean((0, 1)), (255, 0, 0), atol=12)
    np.testing.assert_allclose(pixels[22:38, 2:18].mean((0, 1)), (0, 0, 255), atol=12)
    assert verify.verify_records(str(tmp_path / "out")) == []


def test_huge_header_is_skipped_with_the_pixel_limit(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    _write(folder / "cat.1.jpg", make_jpeg_bytes(seed=1))
    _write(folder / "cat.2.png", png_claiming(9000))
    result = convert([folder], tmp_path / "out")
    assert result.manifest["skipped"] == [
        {"source": "train/cat.2.png", "path": str(folder / "cat.2.png"), "reason": HUGE}
    ]
    assert photo_header.MAX_PIXELS == 65_000_000
    assert verify.verify_records(str(tmp_path / "out")) == []


def build_collection(root: pathlib.Path) -> list[pathlib.Path]:
    """One collection holding every odd case at once; returns the --inputs to convert.

    ``root/photos`` (a folder input) and ``root/export.zip`` (a zip input, as a phone or
    cloud export gives it):

    photos/cats -> ../real_cats          symlinked class folder, 3 cats
    photos/dogs/dog.{0,1,2}.jpg          normal
    photos/dogs/dog.copy.jpg             byte copy of dog.0.jpg (duplicate)
    photos/dogs/dog.<0xff>.jpg           file name that is not UTF-8
    photos/dogs/dog.phone.jpg            EXIF orientation 6
    photos/dogs/dog.huge.png             header claims 9000x9000
    photos/dogs/loop -> ..               symlink loop
    photos/private/                      cannot be listed (see the test's scandir)
    photos/more.zip                      nested archive in a folder
    export.zip: cats/cat.7.jpg twice (two pictures), dogs/dog.big.jpg (over the member
      cap), inner.zip (nested archive in a zip)
    """
    real_cats, photos = root / "real_cats", root / "photos"
    (photos / "dogs").mkdir(parents=True)
    (photos / "private").mkdir()
    real_cats.mkdir()
    for i in range(3):
        _write(real_cats / f"cat.{i}.jpg", make_jpeg_bytes(seed=i))
        _write(photos / "dogs" / f"dog.{i}.jpg", make_jpeg_bytes(seed=10 + i))
    os.symlink("../real_cats", photos / "cats")
    shutil.copy(photos / "dogs" / "dog.0.jpg", photos / "dogs" / "dog.copy.jpg")
    _write(os.fsencode(photos / "dogs") + b"/dog.\xff.jpg", make_jpeg_bytes(seed=20))
    _write(photos / "dogs" / "dog.phone.jpg", _phone_photo())
    _write(photos / "dogs" / "dog.huge.png", png_claiming(9000))
    os.symlink("..", photos / "dogs" / "loop")
    _write(photos / "private" / "cat.9.jpg", make_jpeg_bytes(seed=30))
    _zip(photos / "more.zip", [("cat.8.jpg", make_jpeg_bytes(seed=31))])
    _zip(
        root / "export.zip",
        [
            ("cats/cat.7.jpg", make_jpeg_bytes(seed=40)),
            ("cats/cat.7.jpg", make_jpeg_bytes(seed=41)),
            ("dogs/dog.big.jpg", b"\0" * 2_000_000),
            ("inner.zip", (photos / "more.zip").read_bytes()),
        ],
    )
    return [photos, root / "export.zip"]


def test_every_odd_input_at_once(tmp_path, monkeypatch):
    inputs = build_collection(tmp_path / "collection")
    refuse_private(monkeypatch)
    monkeypatch.setattr(zips, "MAX_MEMBER_BYTES", 1_000_000)  # 64 MiB by default
    out = tmp_path / "out"
    result = convert(inputs, out, num_workers=2)
    manifest = _manifest_text_is_plain_utf8(out)
    accounting = manifest["accounting"]
    assert accounting == {
        "inputs_found": 17,  # 11 files + 2 unreadable folders + 4 zip entries
        "written": 10,
        "skipped": 6,
        "duplicates": 1,
        "converted": 1,
        "resized": 0,
        "folders_found": 5,  # photos, cats (a link), dogs, dogs/loop, private
        "folders_read": 3,
        "folders_skipped": 2,
    }
    assert _balanced(accounting) and result.manifest["accounting"] == accounting
    reasons = {e["source"]: e["reason"] for e in manifest["skipped"]}
    assert reasons == {
        "dogs/dog.big.jpg": "zip member too large: 2000000 bytes uncompressed (limit 1000000)",
        "inner.zip": labels.NESTED_ARCHIVE,
        "photos/dogs/dog.huge.png": HUGE,
        "photos/dogs/loop/": "symlink loop: leads back to the input folder itself, which "
        "contains it; not followed",
        "photos/more.zip": labels.NESTED_ARCHIVE,
        "photos/private/": "folder cannot be read: Permission denied",
    }
    assert manifest["converted"] == [
        {"source": "photos/dogs/dog.phone.jpg", "conversion": PHONE_ROTATION}
    ]
    assert manifest["duplicates"][0]["kept"] == "photos/dogs/dog.0.jpg"
    assert manifest["duplicates"][0]["dropped"] == ["photos/dogs/dog.copy.jpg"]
    by_name = _records_by_name(out)
    assert sorted(by_name) == sorted(
        [
            b"cats/cat.7.jpg (entry 1 of 2)",
            b"cats/cat.7.jpg (entry 2 of 2)",
            b"photos/cats/cat.0.jpg",
            b"photos/cats/cat.1.jpg",
            b"photos/cats/cat.2.jpg",
            b"photos/dogs/dog.0.jpg",
            b"photos/dogs/dog.1.jpg",
            b"photos/dogs/dog.2.jpg",
            b"photos/dogs/dog.\xff.jpg",
            b"photos/dogs/dog.phone.jpg",
        ]
    )
    phone = by_name[b"photos/dogs/dog.phone.jpg"]
    assert (phone[schema.HEIGHT], phone[schema.WIDTH]) == (40, 20)
    assert verify.verify_records(str(out)) == []
    # The same command again: nothing to do, the same answer.
    assert convert(inputs, out, num_workers=2).state == "done"


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_nested_archive_bytes_under_an_image_name_are_named_as_such(tmp_path, kind):
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w") as inner:
        inner.writestr("cat.1.jpg", make_jpeg_bytes(seed=1))
    folder = tmp_path / "train"
    folder.mkdir()
    _write(folder / "cat.1.jpg", make_jpeg_bytes(seed=2))
    _write(folder / "cat.2.jpg", archive_bytes.getvalue())  # a zip saved as .jpg
    source = folder
    if kind == "zip":
        source = tmp_path / "train.zip"
        _zip(source, [(f"train/{p.name}", p.read_bytes()) for p in sorted(folder.iterdir())])
    result = convert([source], tmp_path / "out")
    (skip,) = result.manifest["skipped"]
    assert skip["source"] == "train/cat.2.jpg"
    assert skip["reason"].startswith("nested archive: a zip archive, not an image")


@pytest.mark.slow
def test_big_jpeg_is_converted_reduced_and_listed(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    _write(folder / "cat.1.jpg", make_jpeg_bytes(seed=1))
    make_big_jpeg(folder / "dog.big.jpg")
    result = convert([folder], tmp_path / "out", max_short_side=160, val_fraction=0.0)
    manifest = result.manifest
    assert manifest["skipped"] == []
    assert {
        "source": "train/dog.big.jpg",
        "conversion": ("JPEG 12000x12000 decoded at 1/8 scale (1500x1500, pixel limit 65000000)"),
    } in manifest["converted"]
    record = _records_by_name(tmp_path / "out")[b"train/dog.big.jpg"]
    assert (record[schema.HEIGHT], record[schema.WIDTH]) == (160, 160)
    assert verify.verify_records(str(tmp_path / "out")) == []
