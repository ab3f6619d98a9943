"""Where labelled (and unlabelled) images come from: folders, zips and tables.

Every input is turned into a flat list of ``SourceImage``s *without reading any image*:
listing is cheap, and every file found is an input to account for, so files that
cannot be used (no recognisable label, a label conflict) are still listed, carrying the
``problem`` that will make the writer skip them with that reason.

Kinds of input (auto-detected by ``detect_kind``):

* ``folder``: a directory, walked recursively. The label of ``<dir>/.../<file>`` comes
  from the nearest enclosing folder named like a class (``cat``/``cats``/``Cat`` ...,
  the folder-per-class layout of many public copies), else from the Kaggle file-name
  rule: the word before the first dot (``Dog.12.jpg`` -> dog), case-insensitive. When
  both exist and disagree (``cats/dog.1.jpg``) the file is skipped as conflicting.
* ``zip``: a ``.zip`` archive (e.g. the Kaggle ``train.zip``), read in place with
  ``zipfile``; its member paths are labelled exactly like a folder's relative paths.
* ``table``: a ``.csv``/``.tsv``/``.parquet``/``.json``/``.feather`` file with
  ``filename`` and ``label`` columns; file names are relative to the table's folder
  (absolute ones are used as they are); labels are class names or class indices.

This module reads no flags and imports no TensorFlow, so pool workers stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Iterator, Sequence

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


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One input file: where it is, what it is called and (if known) its label.

    Attributes:
      name: Short, stable name: the path relative to the input folder's *parent*
        (``train/cat.1.jpg`` for input ``.../train``), the member path inside a zip
        (``train/cat.1.jpg`` in Kaggle's ``train.zip``), or the table's ``filename``
        value. Stored in the records as ``image/filename``; posix separators.
      path: The file on disk: the image itself, or the zip that holds it.
      member: The zip member name, or None for a plain file.
      label: Class index, or None when unknown (unlabelled input, or ``problem`` set).
      problem: Why this input cannot be used, found while listing (e.g. no label).
    """

    name: str
    path: str
    member: str | None = None
    label: int | None = None
    problem: str | None = None

    @property
    def location(self) -> str:
        """Full human-readable location (``/data/train.zip:train/cat.1.jpg``)."""
        return self.path if self.member is None else f"{self.path}:{self.member}"

    def read(self) -> bytes:
        """Returns the file's bytes.

        Raises:
          OSError: If the file cannot be read (missing, permission denied, I/O error,
            not a regular file, bad zip member).
        """
        if self.member is not None:
            try:
                return _open_zip(self.path).read(self.member)
            except (zipfile.BadZipFile, KeyError, RuntimeError) as e:
                # Corrupt member or encrypted entry: an unreadable input, not a crash.
                raise OSError(f"cannot read zip member: {e}") from e
        # Refuse FIFOs, sockets and devices: open() on a FIFO would block forever.
        mode = os.stat(self.path).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file (mode {stat.filemode(mode)})")
        with open(self.path, "rb") as f:
            return f.read()


# One open ZipFile per (process, archive): reopening parses the central directory
# (25,000 entries for Kaggle's train.zip) for every image. Keyed by pid so a forked
# worker never shares its parent's file offset.
_ZIP_CACHE: dict[tuple[int, str], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), path)
    if key not in _ZIP_CACHE:
        _ZIP_CACHE[key] = zipfile.ZipFile(path)
    return _ZIP_CACHE[key]


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


def class_from_word(word: str, class_names: Sequence[str]) -> int | None:
    """Class index for ``cat``/``Cats``/``DOG`` ... (singular or plural), else None."""
    word = word.strip().lower()
    for index, class_name in enumerate(class_names):
        if word in (class_name, class_name + "s"):
            return index
    return None


def label_from_path(relpath: str, class_names: Sequence[str]) -> tuple[int | None, str | None]:
    """Label of a file from its path relative to the input (folder or zip).

    Returns:
      ``(label, None)`` on success, else ``(None, reason)``.
    """
    parts = relpath.split("/")
    folder_label = None
    # The nearest class-named folder wins over ones further up (data/cats/x.jpg -> cat).
    for part in reversed(parts[:-1]):
        folder_label = class_from_word(part, class_names)
        if folder_label is not None:
            break
    basename = parts[-1]
    name_label = (
        class_from_word(basename.split(".", 1)[0], class_names) if "." in basename else None
    )
    if folder_label is not None and name_label is not None and folder_label != name_label:
        return None, (
            f"label conflict: folder says {class_names[folder_label]!r}, "
            f"file name says {class_names[name_label]!r}"
        )
    label = folder_label if folder_label is not None else name_label
    if label is None:
        return None, (
            f"no recognisable label: expected <class>.<n>.<ext> or a class folder, "
            f"classes {list(class_names)}"
        )
    return label, None


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


def _walk_files(root: str) -> list[str]:
    """Paths (relative to root, posix) of every non-directory entry below root, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            found.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(found)


def _list_folder(root: str, class_names: Sequence[str]) -> list[SourceImage]:
    prefix = os.path.basename(os.path.normpath(os.path.abspath(root)))
    items = []
    for relpath in _walk_files(root):
        label, problem = label_from_path(relpath, class_names)
        items.append(
            SourceImage(
                name=f"{prefix}/{relpath}",
                path=os.path.join(os.path.abspath(root), *relpath.split("/")),
                label=label,
                problem=problem,
            )
        )
    return items


def _zip_members(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return sorted(info.filename for info in archive.infolist() if not info.is_dir())
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"--input {path!r} is not a readable zip archive: {e}") from e


def _list_zip(path: str, class_names: Sequence[str]) -> list[SourceImage]:
    items = []
    for member in _zip_members(path):
        label, problem = label_from_path(member, class_names)
        items.append(
            SourceImage(
                name=member, path=os.path.abspath(path), member=member, label=label, problem=problem
            )
        )
    return items


def _label_from_cell(value: object, class_names: Sequence[str]) -> tuple[int | None, str | None]:
    """A table's label cell: a class name (any case) or a class index (0/1, "1", 1.0)."""
    text = str(value).strip()
    by_name = class_from_word(text, class_names)
    if by_name is not None:
        return by_name, None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and number.is_integer() and 0 <= number < len(class_names):
        return int(number), None
    return None, f"label {text!r} is not a class name {list(class_names)} or index"


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
        label, problem = _label_from_cell(value, class_names)
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


def list_labelled(path: str, class_names: Sequence[str]) -> tuple[str, list[SourceImage]]:
    """Lists every file of one input, labelled where possible; reads no image.

    Args:
      path: A folder, a zip, or a table (see the module docstring).
      class_names: Class names in label order, e.g. ``("cat", "dog")``.

    Returns:
      ``(kind, items)``: the detected kind and one ``SourceImage`` per file or row,
      sorted by name. Items that cannot be used carry a ``problem``.

    Raises:
      InputError: If the input is missing, of unknown kind, unreadable or empty.
    """
    kind = detect_kind(path)
    listers = {"folder": _list_folder, "zip": _list_zip, "table": _list_table}
    items = listers[kind](path, class_names)
    if not items:
        raise InputError(f"--input {path!r} ({kind}) holds no files; nothing to convert")
    return kind, sorted(items, key=lambda item: (item.name, item.location))


def _natural_key(name: str) -> list:
    """Sort key so that test1/2.jpg comes before test1/10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def iter_unlabelled(path: str) -> Iterator[SourceImage]:
    """Lists the images of an unlabelled folder or zip (e.g. Kaggle's ``test1``).

    Every regular entry is yielded (in natural order: ``2.jpg`` before ``10.jpg``)
    except hidden files and ``__MACOSX`` metadata; the caller decodes ``item.read()``
    and decides what to do with a file that is not an image.

    Args:
      path: A folder (walked recursively) or a ``.zip`` archive.

    Returns:
      An iterator of ``SourceImage`` with ``label=None``; ``name`` is as for ``list_labelled``
      (``test1/12.jpg``), so the Kaggle id is ``os.path.splitext(os.path.basename(name))[0]``.

    Raises:
      InputError: If the path is missing, not a folder or zip, or holds no files.
    """
    kind = detect_kind(path)
    if kind == "folder":
        prefix = os.path.basename(os.path.normpath(os.path.abspath(path)))
        relpaths = _walk_files(path)
        make = lambda rel: SourceImage(  # noqa: E731
            name=f"{prefix}/{rel}", path=os.path.join(os.path.abspath(path), *rel.split("/"))
        )
    elif kind == "zip":
        relpaths = _zip_members(path)
        make = lambda rel: SourceImage(name=rel, path=os.path.abspath(path), member=rel)  # noqa: E731
    else:
        raise InputError(f"{path!r} is a table; unlabelled images come from a folder or a .zip")
    relpaths = [
        rel
        for rel in relpaths
        if not any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))
    ]
    if not relpaths:
        raise InputError(f"{path!r} holds no image files")
    # Listed eagerly so a bad path fails here, at the call, not at the first next().
    return iter([make(rel) for rel in sorted(relpaths, key=_natural_key)])
