"""``make_records --exclude``: the names of images to leave out, read from a file.

The file is one of two things, told apart by its header, never by its extension alone:

* the data audit's ``data_issues.csv``: a header row with at least ``filename`` and
  ``flagged`` columns; ``flagged`` holds the issue types that fire for the row, joined by
  ";" (``ISSUE_TYPES``, empty when none). A row is excluded when one of its types is
  among the chosen ones (``--exclude_issues``, default all);
* a plain list: one name a line; blank lines and lines starting with "#" are ignored.

A name is an image's name as the records store it (``image/filename``: the path
relative to the input folder's parent, ``train/cat.1.jpg``), shown as the manifest
shows it (``sources.display_name``: undecodable bytes as ``\\xff``), which is also how
the audit writes it. The file is data: read as text with ``csv``, nothing in it is run.

This module imports no TensorFlow: ``ConvertOptions`` reads the file while the flags
are checked, so a bad file stops the command before anything is loaded or written.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os

# The audit's issue types, as its ``flagged`` column names them. One definition: the
# audit writes them, --exclude_issues chooses among them.
ISSUE_TYPES = ("neither", "duplicate", "label")
REQUIRED_COLUMNS = ("filename", "flagged")
# The skip reason of an excluded image, in the manifest's ``skipped`` list.
REASON = "excluded by audit"


class ExcludeError(ValueError):
    """The ``--exclude`` file cannot be read or is not a list of names or the audit's CSV."""


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """The names to leave out, and where they came from.

    Attributes:
      path: The file, as an absolute path.
      kind: ``"csv"`` (the audit's) or ``"list"``.
      issues: The issue types that exclude a CSV row; None for a list.
      names: The names to leave out (display form, see the module docstring).
    """

    path: str
    kind: str
    issues: tuple[str, ...] | None
    names: frozenset[str]

    @property
    def names_sha256(self) -> str:
        """Identity of the selection alone: re-ranked audit rows that choose the same
        names give the same value."""
        return hashlib.sha256("\n".join(sorted(self.names)).encode()).hexdigest()


def _text(path: str) -> str:
    try:
        # utf-8-sig: a CSV saved by a spreadsheet starts with a byte-order mark.
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ExcludeError(
            f"cannot read {path}: not UTF-8 text ({e.reason} at byte {e.start}); "
            "expected a list of file names or the audit's data_issues.csv"
        ) from None
    except OSError as e:
        raise ExcludeError(f"cannot read {path}: {e.strerror or e}") from None


def _flagged(path: str, line: int, cell: str) -> set[str]:
    types = {part.strip() for part in cell.split(";") if part.strip()}
    unknown = sorted(types - set(ISSUE_TYPES))
    if unknown:
        raise ExcludeError(
            f"{path} line {line}: flagged holds {', '.join(map(repr, unknown))}; expected "
            f"issue types joined by ';' from {', '.join(ISSUE_TYPES)} (the audit's "
            "data_issues.csv), or empty"
        )
    return types


def _read_csv(path: str, text: str, issues: tuple[str, ...]) -> set[str]:
    reader = csv.reader(io.StringIO(text))
    header = next(cells for cells in reader if any(cell.strip() for cell in cells))
    header = [cell.strip() for cell in header]
    column = {name: header.index(name) for name in REQUIRED_COLUMNS}
    names = set()
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise ExcludeError(
                f"{path} line {line}: {len(row)} fields, the header has {len(header)}"
            )
        name = row[column["filename"]]
        if not name:
            raise ExcludeError(f"{path} line {line}: empty filename")
        if _flagged(path, line, row[column["flagged"]]) & set(issues):
            names.add(name)
    return names


def read_exclusion(path: str, issues: tuple[str, ...] | None) -> Exclusion:
    """Reads the ``--exclude`` file.

    Args:
      path: A plain list of names, or the audit's CSV (see the module docstring).
      issues: For a CSV, the issue types that exclude a row (None: all of
        ``ISSUE_TYPES``); unused for a plain list (``Exclusion.issues`` is None).

    Returns:
      The names to leave out.

    Raises:
      ExcludeError: The file cannot be read, a ``.csv`` lacks the audit's columns, or
        a CSV row is malformed.
    """
    text = _text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    header = [cell.strip() for cell in next(csv.reader([first]), [])]
    if all(name in header for name in REQUIRED_COLUMNS):
        chosen = ISSUE_TYPES if issues is None else tuple(issues)
        try:
            names = _read_csv(path, text, chosen)
        except csv.Error as e:
            raise ExcludeError(f"{path} is not valid CSV: {e}") from None
        return Exclusion(os.path.abspath(path), "csv", chosen, frozenset(names))
    if os.path.splitext(path)[1].lower() == ".csv":
        raise ExcludeError(
            f"{path} has no header with columns {' and '.join(REQUIRED_COLUMNS)} (its first "
            f"line: {first[:80]!r}); expected the audit's data_issues.csv, or a plain list "
            "of file names, one a line, in a file not named .csv"
        )
    listed = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return Exclusion(os.path.abspath(path), "list", None, frozenset(listed))


def _prefixes(names) -> list[str]:
    """The distinct first folders of ``names`` (``train/`` of ``train/cat.1.jpg``)."""
    return sorted({name.split("/", 1)[0] + "/" for name in names if "/" in name})


def describe_unmatched(exclusion: Exclusion, unmatched: list[str], input_names: list[str]) -> str:
    """A warning about names of ``exclusion`` that match no input (``unmatched``, sorted).

    When none matches, it says what the names look like next to what the inputs' names
    look like: the usual cause is a list made for records of another folder, or names
    written without their folder (``cat.1.jpg`` for ``train/cat.1.jpg``).
    """
    examples = ", ".join(unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
    theirs, ours = _prefixes(unmatched), _prefixes(input_names)
    folders = ""
    if not set(theirs) & set(ours):
        folders = (
            f"; its names start with {', '.join(theirs[:3]) or 'no folder'}, this run's "
            f"inputs' with {', '.join(ours[:3]) or 'no folder'}"
        )
    if len(unmatched) == len(exclusion.names):
        return (
            f"--exclude {exclusion.path}: none of its {len(unmatched)} names matches an input, "
            f"so nothing is excluded (e.g. {examples}){folders}. Was it made for other "
            "records? A name must be the image's name as the records store it, with its "
            f"folder: {', '.join(sorted(input_names)[:2])} ..."
        )
    return (
        f"--exclude {exclusion.path}: {len(unmatched)} of its {len(exclusion.names)} names "
        f"match no input and are ignored (e.g. {examples}){folders}"
    )
