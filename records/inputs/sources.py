"""Where labelled (and unlabelled) images come from: folders, zips and tables.

Every input is turned into a flat list of ``SourceImage``s *without reading any image*:
listing is cheap, and every file found is an input to account for, so files that
cannot be used (no recognisable label, a label conflict, a nested archive, a zip member
too large) are still listed, carrying the ``problem`` that will make the writer skip
them with that reason.

Kinds of input (auto-detected by ``detect_kind``):

* ``folder``: a directory, walked recursively (``records.inputs.folders``). The label of
  ``<dir>/.../<file>`` comes from the nearest enclosing folder named like a class
  (``cat``/``cats``/``Cat`` ..., the folder-per-class layout of many public copies),
  else from the Kaggle file-name rule: the word before the first dot (``Dog.12.jpg`` ->
  dog), case-insensitive (``records.inputs.labels``). When both exist and disagree
  (``cats/dog.1.jpg``) the file is skipped as conflicting; an archive inside the input
  is skipped as a nested archive. Symlinked folders are followed (``cats -> ../real_cats``).
  A folder that cannot be listed (permission denied, a symlink loop, the same folder
  reached twice through symlinks, an I/O error) is itself listed as *one input* with
  the reason as its ``problem``: its files are unknown, so the folder stands for them,
  and the accounting (written + skipped + duplicates == inputs found) counts it as one
  input found and one skipped. ``Listing`` also counts folders, so that one dropped
  without a trace breaks ``folders_found == folders_read + folders_skipped``.
* ``zip``: a ``.zip`` archive (e.g. the Kaggle ``train.zip``), read in place with
  ``zipfile``; its member paths are labelled exactly like a folder's relative paths.
  Members are read by their entry, not their name, so two entries with the same name
  are two inputs (named ``<member> (entry 1 of 2)`` ...). A member larger than
  ``zips.MAX_MEMBER_BYTES`` uncompressed is skipped unread (``records.inputs.zips``).
* ``table``: a ``.csv``/``.tsv``/``.parquet``/``.json``/``.feather`` file with
  ``filename`` and ``label`` columns; file names are relative to the
  table's folder (absolute ones are used as they are); labels are class names or indices.

A file name that is not valid UTF-8 arrives (as Python gives it) as a ``str`` with
surrogate escapes; it is kept so in ``SourceImage.name``, stored as its original bytes
in the records, and shown with ``display_name`` wherever it is written as text.

This module reads no flags and imports no TensorFlow, so pool workers stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import zipfile
from collections.abc import Sequence

from records.inputs import folders, zips
from records.inputs.labels import label_from_cell, label_from_path

# Table formats, by extension, and the pandas reader for each.
_TABLE_READERS = {
    ".csv": ("read_csv", {}),
    ".tsv": ("read_csv", {"sep": "\t"}),
    ".txt": ("read_csv", {}),
    ".parquet": ("read_parquet", {}),
    ".pq": ("read_parquet", {}),
    ".json": ("read_json", {}),
    ".jsonl": ("read_json", {"lines": True}),
    ".feather": ("read_feather", {}),
}


class InputError(ValueError):
    """A user-facing problem with an ``--input`` (missing, empty, unknown kind ...)."""


def display_name(name: str) -> str:
    """``name`` as readable text: undecodable bytes of a file name shown as ``\\xff``.

    File names that are not valid UTF-8 come from the OS as ``str`` with surrogate
    escapes, which strict UTF-8 (and JSON readers) refuse; this is what manifests and
    logs show instead. Valid names are returned unchanged.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One input file (or one unreadable folder): where it is, its name and label.

    Attributes:
      name: Short, stable name: the path relative to the input folder's *parent*
        (``train/cat.1.jpg`` for input ``.../train``), the member path inside a zip
        (``train/cat.1.jpg`` in Kaggle's ``train.zip``; ``... (entry 2 of 2)`` when the
        zip holds that name more than once), or the table's ``filename`` value. Stored in
        the records as ``image/filename``; posix separators; an unreadable folder's name
        ends with ``/``. May hold surrogate escapes (see ``display_name``).
      path: The file on disk: the image itself, or the zip that holds it.
      member: The zip member name, or None for a plain file.
      label: Class index, or None when unknown (unlabelled input, or ``problem`` set).
      problem: Why this input cannot be used, found while listing (e.g. no label).
      member_index: Position of the member's entry in the zip's central directory.
      folder: Whether this stands for a folder that could not be listed.
    """

    name: str
    path: str
    member: str | None = None
    label: int | None = None
    problem: str | None = None
    member_index: int | None = None
    folder: bool = False

    @property
    def location(self) -> str:
        """Full human-readable location (``/data/train.zip:train/cat.1.jpg``)."""
        # A zip item's name is its member path (plus the entry number for repeats).
        return self.path if self.member is None else f"{self.path}:{self.name}"

    def read(self) -> bytes:
        """Returns the file's bytes.

        Raises:
          OSError: If the file cannot be read (missing, permission denied, I/O error,
            not a regular file, a folder, bad or too large zip member).
        """
        if self.folder:
            raise IsADirectoryError(self.problem or "a folder, not a file")
        if self.member is not None:
            return zips.read_member(self.path, self.member, self.member_index)
        # Refuse FIFOs, sockets and devices: open() on a FIFO would block forever.
        mode = os.stat(self.path).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file (mode {stat.filemode(mode)})")
        with open(self.path, "rb") as f:
            return f.read()


def read_digest(source: SourceImage) -> tuple:
    """Pool worker for the planning pass: ``("ok", sha256_hex, size)`` or ``("skip", reason)``.

    Zero-byte files are skipped here, before duplicate detection, so that a folder's
    empty files are reported as empty rather than as duplicates of each other.
    """
    try:
        data = source.read()
    except OSError as e:
        return "skip", f"unreadable: {e}"
    if not data:
        return "skip", "empty file (0 bytes)"
    return "ok", hashlib.sha256(data).hexdigest(), len(data)


def detect_kind(path: str) -> str:
    """``folder``, ``zip`` or ``table`` for an input path.

    Raises:
      InputError: If the path does not exist or is of no known kind.
    """
    if not os.path.exists(path):
        raise InputError(f"--input {path!r} does not exist")
    if os.path.isdir(path):
        return "folder"
    extension = os.path.splitext(path)[1].lower()
    if extension == ".zip" or (extension not in _TABLE_READERS and zipfile.is_zipfile(path)):
        return "zip"
    if extension in _TABLE_READERS:
        return "table"
    raise InputError(
        f"--input {path!r}: cannot tell what it is; expected a folder, a .zip, or a table "
        f"({', '.join(sorted(_TABLE_READERS))}) with filename,label columns"
    )


@dataclasses.dataclass(frozen=True)
class Listing:
    """Everything found in one input.

    Attributes:
      kind: ``folder``, ``zip`` or ``table``.
      items: One ``SourceImage`` per file, row, zip entry or unreadable folder, sorted
        by name; each is an input to account for.
      folders_found: Folders seen (the input folder included), symlinked ones too; 0
        for a zip or a table.
      folders_read: Folders whose entries were listed.
    """

    kind: str
    items: list[SourceImage]
    folders_found: int = 0
    folders_read: int = 0

    @property
    def folders_skipped(self) -> int:
        """Folders listed as skipped inputs (``folder`` items)."""
        return sum(item.folder for item in self.items)


def walk_folder(root: str) -> folders.Walk:
    try:
        return folders.walk(root)
    except OSError as e:
        raise InputError(f"--input {root!r}: cannot list the folder: {e}") from e


def folder_items(root: str, walk: folders.Walk, class_names) -> list[SourceImage]:
    prefix = os.path.basename(os.path.normpath(os.path.abspath(root)))
    base = os.path.abspath(root)
    items = []
    for relpath in walk.files:
        label, problem = label_from_path(relpath, class_names) if class_names else (None, None)
        items.append(
            SourceImage(
                name=f"{prefix}/{relpath}",
                path=os.path.join(base, *relpath.split("/")),
                label=label,
                problem=problem,
            )
        )
    for relpath, reason in walk.bad_folders:
        items.append(
            SourceImage(
                name=f"{prefix}/{relpath}/",
                path=os.path.join(base, *relpath.split("/")),
                problem=reason,
                folder=True,
            )
        )
    return items


def zip_items(path: str) -> list[SourceImage]:
    """One unlabelled item per file entry, in central-directory order."""
    try:
        entries = zips.file_entries(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"--input {path!r} is not a readable zip archive: {e}") from e
    repeats: dict[str, int] = {}
    for _, info in entries:
        repeats[info.filename] = repeats.get(info.filename, 0) + 1
    seen: dict[str, int] = {}
    items = []
    for index, info in entries:
        name = info.filename
        if repeats[name] > 1:
            # ZipFile.read(name) would give the last entry for every copy: read by entry,
            # and name each one so the reports can tell them apart.
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} (entry {seen[name]} of {repeats[name]})"
        items.append(
            SourceImage(
                name=name,
                path=os.path.abspath(path),
                member=info.filename,
                member_index=index,
                problem=zips.too_large(info.file_size),
            )
        )
    return items


def _labelzip_items(items: list[SourceImage], class_names) -> list[SourceImage]:
    labelled = []
    for item in items:
        label, problem = label_from_path(item.member, class_names)
        # A size problem found while listing wins: the member is never read.
        problem = item.problem or problem
        labelled.append(
            dataclasses.replace(item, label=None if problem else label, problem=problem)
        )
    return labelled


def _list_table(path: str, class_names: Sequence[str]) -> list[SourceImage]:
    import pandas as pd  # Only tables need pandas; keeps folder/zip listing light.

    reader, kwargs = _TABLE_READERS[os.path.splitext(path)[1].lower()]
    try:
        # dtype=str keeps "007.jpg" and "1" exactly as written (no float coercion).
        if reader == "read_csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)
        else:
            frame = getattr(pd, reader)(path, **kwargs)
    except Exception as e:  # pandas raises many types for a bad file; all are user errors.
        raise InputError(f"--input {path!r}: cannot read it as a table: {e}") from e
    columns = {str(c).strip().lower(): c for c in frame.columns}
    missing = [c for c in ("filename", "label") if c not in columns]
    if missing:
        raise InputError(
            f"--input {path!r} has no {' or '.join(missing)} column; it has "
            f"{[str(c) for c in frame.columns]} (need filename,label)"
        )
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for filename, value in zip(frame[columns["filename"]], frame[columns["label"]]):
        name = str(filename).strip().replace("\\", "/")
        label, problem = label_from_cell(value, class_names)
        if not name:
            problem = "empty filename in table"
        items.append(
            SourceImage(
                name=name,
                path=os.path.normpath(os.path.join(base, name)),
                label=label,
                problem=problem,
            )
        )
    return items


def list_labelled(path: str, class_names: Sequence[str]) -> Listing:
    """Lists every file of one input, labelled where possible; reads no image.

    Args:
      path: A folder, a zip, or a table (see the module docstring).
      class_names: Class names in label order, e.g. ``("cat", "dog")``.

    Returns:
      The listing: the detected kind and one ``SourceImage`` per file, row, zip entry or
      unreadable folder, sorted by name. Items that cannot be used carry a ``problem``.

    Raises:
      InputError: If the input is missing, of unknown kind, unreadable or empty.
    """
    kind = detect_kind(path)
    walk = None
    if kind == "folder":
        walk = walk_folder(path)
        items = folder_items(path, walk, class_names)
    elif kind == "zip":
        items = _labelzip_items(zip_items(path), class_names)
    else:
        items = _list_table(path, class_names)
    if not items:
        raise InputError(f"--input {path!r} ({kind}) holds no files; nothing to convert")
    items.sort(key=lambda item: (item.name, item.location))
    if walk is None:
        return Listing(kind, items)
    return Listing(kind, items, walk.folders_found, walk.folders_read)
