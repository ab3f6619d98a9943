"""What label a file has, from its path or from a table's label cell.

The rules (see ``records.inputs.sources`` for where paths come from): the nearest enclosing
folder named like a class (``cat``/``cats``/``Cat`` ...) wins, else the Kaggle file-name
rule, the word before the first dot (``Dog.12.jpg`` -> dog), case-insensitive; a folder
and a file name that disagree make the file conflicting. Archives found inside an input
are never labelled: they are reported as nested archives.

Imports no TensorFlow (runs in pool workers' parent while listing).
"""

from __future__ import annotations

from collections.abc import Sequence

# Archives found inside an input are not opened (no recursion into archives); each one
# is listed and skipped with this advice.
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")
NESTED_ARCHIVE = "nested archive: unpack it and pass it as its own --input"


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
    basename = parts[-1]
    if basename.lower().endswith(ARCHIVE_EXTENSIONS):
        # Whatever its name says, an archive is not an image; say what to do with it.
        return None, NESTED_ARCHIVE
    folder_label = None
    # The nearest class-named folder wins over ones further up (data/cats/x.jpg -> cat).
    for part in reversed(parts[:-1]):
        folder_label = class_from_word(part, class_names)
        if folder_label is not None:
            break
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


def label_from_cell(value: object, class_names: Sequence[str]) -> tuple[int | None, str | None]:
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
