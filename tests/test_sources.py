"""Tests for records.inputs.sources: input kinds, labels, reading, unlabelled listing."""

from __future__ import annotations

import os
import warnings
import zipfile

import pandas as pd
import pytest

from conftest import make_jpeg_bytes, write_kaggle_folder
from records.inputs import labels, sources, unlabelled, zips

CLASSES = ("cat", "dog")


@pytest.mark.parametrize(
    "relpath, label",
    [
        ("cat.1.jpg", 0),
        ("Dog.12.JPG", 1),
        ("DOG.3.jpeg", 1),
        ("cats/0001.jpg", 0),
        ("PetImages/Dog/12.jpg", 1),
        ("train/cat.7.jpg", 0),  # "train" is no class: the file name decides
        ("dogs/dog.5.jpg", 1),  # agreement is fine
        ("data/cats/extra/1.jpg", 0),  # nearest class folder above the file
    ],
)
def test_label_from_path_recognises_layouts(relpath, label):
    assert labels.label_from_path(relpath, CLASSES) == (label, None)


@pytest.mark.parametrize(
    "relpath, reason",
    [
        ("cow.1.jpg", "no recognisable label"),
        ("catdog.jpg", "no recognisable label"),
        ("cat", "no recognisable label"),  # no dot: no Kaggle-style label word
        ("README.md", "no recognisable label"),
        ("cats/dog.1.jpg", "label conflict"),
    ],
)
def test_label_from_path_reports_why_not(relpath, reason):
    label, problem = labels.label_from_path(relpath, CLASSES)
    assert label is None
    assert reason in problem


def test_detect_kind(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "a.zip").write_bytes(b"")
    (tmp_path / "t.csv").write_text("filename,label\n")
    (tmp_path / "notes.bin").write_bytes(b"xx")
    assert sources.detect_kind(str(tmp_path / "folder")) == "folder"
    assert sources.detect_kind(str(tmp_path / "a.zip")) == "zip"
    assert sources.detect_kind(str(tmp_path / "t.csv")) == "table"
    with pytest.raises(sources.InputError, match="cannot tell what it is"):
        sources.detect_kind(str(tmp_path / "notes.bin"))
    with pytest.raises(sources.InputError, match="does not exist"):
        sources.detect_kind(str(tmp_path / "missing"))


def test_list_folder_names_labels_and_problems(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 2)
    (folder / "horse.1.jpg").write_bytes(b"x")
    listing = sources.list_labelled(str(folder), CLASSES)
    kind, items = listing.kind, listing.items
    assert kind == "folder"
    names = [item.name for item in items]
    assert names == sorted(names)
    assert "train/cat.0.jpg" in names and "train/dog.1.jpg" in names
    by_name = {item.name: item for item in items}
    assert by_name["train/dog.1.jpg"].label == 1
    assert by_name["train/dog.1.jpg"].read() == (folder / "dog.1.jpg").read_bytes()
    assert by_name["train/horse.1.jpg"].label is None
    assert "no recognisable label" in by_name["train/horse.1.jpg"].problem


def test_zip_lists_same_names_and_bytes_as_folder(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 2)
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train/", "")  # directory entries are not inputs
        for path in sorted(folder.iterdir()):
            z.write(path, f"train/{path.name}")
    from_folder = sources.list_labelled(str(folder), CLASSES).items
    listing = sources.list_labelled(str(archive), CLASSES)
    kind, from_zip = listing.kind, listing.items
    assert kind == "zip"
    assert [(i.name, i.label) for i in from_zip] == [(i.name, i.label) for i in from_folder]
    assert [i.read() for i in from_zip] == [i.read() for i in from_folder]
    assert from_zip[0].location == f"{archive}:train/cat.0.jpg"


def test_bad_zip_is_an_input_error(tmp_path):
    (tmp_path / "train.zip").write_bytes(b"not a zip at all")
    with pytest.raises(sources.InputError, match="not a readable zip"):
        sources.list_labelled(str(tmp_path / "train.zip"), CLASSES)


@pytest.mark.parametrize("extension", [".csv", ".tsv", ".parquet"])
def test_table_labels_by_name_or_index(tmp_path, extension):
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (images / name).write_bytes(make_jpeg_bytes(seed=len(name)))
    frame = pd.DataFrame(
        {
            "filename": ["imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg", "imgs/d.jpg"],
            "label": ["Cat", "1", "0", "horse"],
        }
    )
    path = tmp_path / f"labels{extension}"
    if extension == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if extension == ".tsv" else ",")
    listing = sources.list_labelled(str(path), CLASSES)
    kind, items = listing.kind, listing.items
    assert kind == "table"
    assert [(i.name, i.label) for i in items] == [
        ("imgs/a.jpg", 0),
        ("imgs/b.jpg", 1),
        ("imgs/c.jpg", 0),
        ("imgs/d.jpg", None),
    ]
    assert "'horse' is not a class" in items[3].problem
    # Paths are relative to the table, wherever the process runs from.
    assert items[0].read() == (images / "a.jpg").read_bytes()


def test_table_with_integer_labels(tmp_path):
    pd.DataFrame({"Filename": ["x.jpg"], "Label": [1]}).to_parquet(tmp_path / "t.parquet")
    items = sources.list_labelled(str(tmp_path / "t.parquet"), CLASSES).items
    assert items[0].label == 1


def test_table_without_columns_or_rows_is_an_input_error(tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.jpg,cat\n")
    with pytest.raises(sources.InputError, match="no filename or label column"):
        sources.list_labelled(str(tmp_path / "bad.csv"), CLASSES)
    (tmp_path / "empty.csv").write_text("filename,label\n")
    with pytest.raises(sources.InputError, match="holds no files"):
        sources.list_labelled(str(tmp_path / "empty.csv"), CLASSES)


def test_empty_folder_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.InputError, match="holds no files"):
        sources.list_labelled(str(tmp_path / "empty"), CLASSES)


def test_read_digest_skips_unreadable_and_empty(tmp_path):
    (tmp_path / "cat.1.jpg").write_bytes(b"")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "cat.2.jpg")
    os.mkfifo(tmp_path / "cat.3.jpg")
    (tmp_path / "cat.4.jpg").write_bytes(b"abc")
    items = sources.list_labelled(str(tmp_path), CLASSES).items
    results = {item.name.split("/")[-1]: sources.read_digest(item) for item in items}
    assert results["cat.1.jpg"] == ("skip", "empty file (0 bytes)")
    assert results["cat.2.jpg"][0] == "skip" and "No such file" in results["cat.2.jpg"][1]
    # A FIFO would block open() forever; it is refused without opening.
    assert results["cat.3.jpg"][0] == "skip" and "not a regular file" in results["cat.3.jpg"][1]
    assert results["cat.4.jpg"] == (
        "ok",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        3,
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_unreadable(tmp_path):
    path = tmp_path / "cat.1.jpg"
    path.write_bytes(b"abc")
    path.chmod(0)
    items = sources.list_labelled(str(tmp_path), CLASSES).items
    status, reason = sources.read_digest(items[0])
    assert status == "skip" and "Permission denied" in reason


def test_unlabelled_folder_and_zip_in_natural_order(tmp_path):
    folder = tmp_path / "test1"
    folder.mkdir()
    for number in (10, 2, 1):
        (folder / f"{number}.jpg").write_bytes(make_jpeg_bytes(seed=number))
    (folder / ".DS_Store").write_bytes(b"junk")
    items = unlabelled.list_unlabelled(str(folder)).images
    assert [i.name for i in items] == ["test1/1.jpg", "test1/2.jpg", "test1/10.jpg"]
    assert all(i.label is None for i in items)
    assert items[1].read() == (folder / "2.jpg").read_bytes()

    archive = tmp_path / "test1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for number in (10, 2, 1):
            z.write(folder / f"{number}.jpg", f"test1/{number}.jpg")
        z.writestr("__MACOSX/test1/._1.jpg", b"junk")
    zipped = unlabelled.list_unlabelled(str(archive)).images
    assert [i.name for i in zipped] == [i.name for i in items]
    assert [i.read() for i in zipped] == [i.read() for i in items]


def test_unlabelled_listing_errors(tmp_path):
    with pytest.raises(sources.InputError, match="does not exist"):
        unlabelled.list_unlabelled(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.InputError, match="holds no image files"):
        unlabelled.list_unlabelled(str(tmp_path / "empty"))
    (tmp_path / "t.csv").write_text("filename,label\na.jpg,cat\n")
    with pytest.raises(sources.InputError, match="is a table"):
        unlabelled.list_unlabelled(str(tmp_path / "t.csv"))


def _zip_with_repeated_name(path, first: bytes, second: bytes, name="train/cat.1.jpg"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(name, first)
            z.writestr(name, second)


def test_symlinked_class_folder_is_followed(tmp_path):
    real_cats = tmp_path / "real_cats"
    real_cats.mkdir()
    for i in range(3):
        (real_cats / f"{i}.jpg").write_bytes(make_jpeg_bytes(seed=i))
    (tmp_path / "in" / "dogs").mkdir(parents=True)
    (tmp_path / "in" / "dogs" / "0.jpg").write_bytes(make_jpeg_bytes(seed=9))
    os.symlink("../real_cats", tmp_path / "in" / "cats")
    listing = sources.list_labelled(str(tmp_path / "in"), CLASSES)
    assert [(i.name, i.label) for i in listing.items] == [
        ("in/cats/0.jpg", 0),
        ("in/cats/1.jpg", 0),
        ("in/cats/2.jpg", 0),
        ("in/dogs/0.jpg", 1),
    ]
    assert listing.items[1].read() == (real_cats / "1.jpg").read_bytes()
    assert (listing.folders_found, listing.folders_read, listing.folders_skipped) == (3, 3, 0)


def test_symlink_loops_and_folders_reached_twice_are_listed_not_followed(tmp_path):
    root = tmp_path / "in"
    (root / "dogs").mkdir(parents=True)
    (root / "dogs" / "1.jpg").write_bytes(b"x")
    os.symlink("..", root / "dogs" / "back")  # a loop: in/dogs/back/dogs/back/...
    os.symlink("dogs", root / "more_dogs")  # the same folder under a second name
    os.symlink("nowhere", root / "gone")  # broken: an unreadable *file*, listed as such
    listing = sources.list_labelled(str(root), CLASSES)
    by_name = {item.name: item for item in listing.items}
    assert sorted(by_name) == ["in/dogs/1.jpg", "in/dogs/back/", "in/gone", "in/more_dogs/"]
    loop, twice = by_name["in/dogs/back/"], by_name["in/more_dogs/"]
    assert loop.folder and loop.problem.startswith("symlink loop: leads back to the input folder")
    assert twice.folder and twice.problem.startswith("same folder as dogs/, already listed")
    assert by_name["in/gone"].problem is not None  # no label; read_digest would say why
    assert (listing.folders_found, listing.folders_read, listing.folders_skipped) == (4, 2, 2)
    with pytest.raises(OSError, match="symlink loop"):
        loop.read()


def test_folder_that_cannot_be_listed_is_an_input_with_its_reason(tmp_path, monkeypatch):
    root = tmp_path / "in"
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        (root / name / "1.jpg").write_bytes(name.encode())
    real_scandir = os.scandir

    def scandir(path="."):
        # As root a chmod-000 folder is still readable, so the refusal is simulated.
        if isinstance(path, str) and os.path.basename(path) == "dogs":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = sources.list_labelled(str(root), CLASSES)
    assert [(i.name, i.folder, i.problem) for i in listing.items] == [
        ("in/cats/1.jpg", False, None),
        ("in/dogs/", True, "folder cannot be read: Permission denied"),
    ]
    assert (listing.folders_found, listing.folders_read, listing.folders_skipped) == (3, 2, 1)
    # Unlabelled listing (predict) lists the folder as ignored, with its reason.
    listed = unlabelled.list_unlabelled(str(root))
    assert [i.name for i in listed.images] == ["in/cats/1.jpg"]
    assert [(i.name, reason) for i, reason in listed.ignored] == [
        ("in/dogs/", "folder cannot be read: Permission denied")
    ]
    # The input folder itself unreadable: nothing to list, an input error.
    monkeypatch.setattr(
        os, "scandir", lambda path: (_ for _ in ()).throw(PermissionError(13, "no"))
    )
    with pytest.raises(sources.InputError, match="cannot list the folder"):
        sources.list_labelled(str(root), CLASSES)


def test_zip_entries_with_the_same_name_are_each_read(tmp_path):
    archive = tmp_path / "train.zip"
    first, second = make_jpeg_bytes(seed=1), make_jpeg_bytes(seed=2)
    _zip_with_repeated_name(archive, first, second)
    items = sources.list_labelled(str(archive), CLASSES).items
    assert [(i.name, i.member, i.label) for i in items] == [
        ("train/cat.1.jpg (entry 1 of 2)", "train/cat.1.jpg", 0),
        ("train/cat.1.jpg (entry 2 of 2)", "train/cat.1.jpg", 0),
    ]
    assert [i.read() for i in items] == [first, second]
    assert items[0].location == f"{archive}:train/cat.1.jpg (entry 1 of 2)"
    entries = unlabelled.list_unlabelled(str(archive)).images
    assert [i.read() for i in entries] == [first, second]


def test_zip_member_over_the_size_cap_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(zips, "MAX_MEMBER_BYTES", 1000)
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cat.1.jpg", b"\0" * 5000)  # compresses to a few bytes
        z.writestr("cat.2.jpg", b"\0" * 1000)
    items = sources.list_labelled(str(archive), CLASSES).items
    assert items[0].problem == "zip member too large: 5000 bytes uncompressed (limit 1000)"
    assert items[0].label is None and items[1].problem is None
    with pytest.raises(OSError, match="zip member too large: 5000 bytes"):
        items[0].read()  # predict reads without looking at problem: refused there too
    assert items[1].read() == b"\0" * 1000


def test_zip_header_that_understates_the_size_cannot_make_us_read_more(tmp_path):
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("cat.1.jpg", b"a" * 2000)
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (500).to_bytes(4, "little")  # "500 bytes"
    archive.write_bytes(bytes(data))
    (item,) = sources.list_labelled(str(archive), CLASSES).items
    assert item.problem is None
    status, reason = sources.read_digest(item)
    assert status == "skip" and reason.startswith("unreadable: cannot read zip member")


def test_nested_archives_are_listed_as_such(tmp_path):
    inner = tmp_path / "in" / "cats" / "more.zip"
    inner.parent.mkdir(parents=True)
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("cat.1.jpg", make_jpeg_bytes(seed=1))
    outer = tmp_path / "train.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.write(inner, "train/cat.tar.gz")
        z.write(inner, "train/cats.zip")
    (folder_item,) = sources.list_labelled(str(tmp_path / "in"), CLASSES).items
    assert folder_item.problem == labels.NESTED_ARCHIVE
    zip_items = sources.list_labelled(str(outer), CLASSES).items
    assert [i.problem for i in zip_items] == [labels.NESTED_ARCHIVE] * 2
    assert "unpack it and pass it as its own --input" in labels.NESTED_ARCHIVE


def test_display_name_shows_undecodable_bytes():
    name = os.fsdecode(b"train/cat.\xff.jpg")
    assert name == "train/cat.\udcff.jpg"
    assert sources.display_name(name) == "train/cat.\\xff.jpg"
    assert sources.display_name("train/chat-été.jpg") == "train/chat-été.jpg"
    sources.display_name(name).encode("utf-8")  # strict UTF-8 accepts it
