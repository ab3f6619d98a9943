"""Unlabelled images for ``predict``: a folder or zip (e.g. Kaggle's ``test1``), by name.

Files are selected by name only (nothing is read): images by extension, case-insensitive;
hidden files and folders and macOS ``__MACOSX`` metadata are left out; archives are nested
archives, as for ``make_records``. Every other file is listed as ignored, with its reason.
Imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import re

from records.inputs import labels
from records.inputs.sources import (
    InputError,
    SourceImage,
    detect_kind,
    folder_items,
    walk_folder,
    zip_items,
)


def _natural_key(name: str) -> list:
    """Sort key so that test1/2.jpg comes before test1/10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# What ``predict`` takes for an image, by name (case-insensitive): the formats the
# converter reads and stores (``records.photo``: JPEG, and PNG/GIF/BMP/WebP/TIFF which it
# converts). A file with another name (Thumbs.db, notes.txt) is not an input to predict.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
)


def unlabelled_problem(name: str) -> str | None:
    """Why the file ``name`` (a listing name, ``test1/x.db``) is not an image to predict.

    The rule for unlabelled inputs: hidden files and folders (``.DS_Store``, ``._1.jpg``)
    and macOS ``__MACOSX`` metadata are left out, archives are nested archives (as for
    ``make_records``, ``labels.NESTED_ARCHIVE``), and anything else must have one of
    ``IMAGE_EXTENSIONS``. An image *name* whose bytes do not decode is still an input
    (the caller reports it as a bad image); only the names decide here.

    Returns:
      None for an image name, else the reason to list it as ignored.
    """
    parts = name.split("/")
    if "__MACOSX" in parts[:-1]:
        return "macOS metadata (__MACOSX folder)"
    if any(part.startswith(".") for part in parts[:-1]):
        return "in a hidden folder"
    basename = parts[-1]
    if basename.startswith("."):
        return "hidden file"
    extension = os.path.splitext(basename)[1].lower()
    if basename.lower().endswith(labels.ARCHIVE_EXTENSIONS):
        return labels.NESTED_ARCHIVE
    if extension not in IMAGE_EXTENSIONS:
        shown = f"extension {extension!r}" if extension else "no extension"
        return f"not an image file name ({shown}; images are {', '.join(IMAGE_EXTENSIONS)})"
    return None


@dataclasses.dataclass(frozen=True)
class UnlabelledListing:
    """The files of an unlabelled folder or zip, split into images and ignored files.

    Attributes:
      images: The images to predict, in natural order (``2.jpg`` before ``10.jpg``).
      ignored: ``(item, reason)`` for every other file and every folder that could not
        be listed, in natural order.
    """

    images: list[SourceImage]
    ignored: list[tuple[SourceImage, str]]


def list_unlabelled(path: str) -> UnlabelledListing:
    """Lists an unlabelled folder or zip (e.g. Kaggle's ``test1``): images and ignored files.

    Files are selected by name (``unlabelled_problem``); nothing is read. A folder that
    cannot be listed (see the module docstring) is an ignored entry with its reason.

    Args:
      path: A folder (walked recursively) or a ``.zip`` archive.

    Returns:
      The listing; items have ``label=None`` and ``name`` as for ``list_labelled``
      (``test1/12.jpg``), so the Kaggle id is ``os.path.splitext(os.path.basename(name))[0]``.

    Raises:
      InputError: If the path is missing, not a folder or zip, or holds no image files.
    """
    kind = detect_kind(path)
    if kind == "folder":
        items = folder_items(path, walk_folder(path), class_names=None)
    elif kind == "zip":
        items = zip_items(path)
    else:
        raise InputError(f"{path!r} is a table; unlabelled images come from a folder or a .zip")
    images, ignored = [], []
    for item in sorted(items, key=lambda item: _natural_key(item.name)):
        if item.folder:
            ignored.append((item, item.problem or "folder cannot be read"))
            continue
        # A folder item's name starts with the input folder's own name, which the user
        # chose: only the parts below it can make a file hidden. A zip item's name may end
        # in " (entry 1 of 2)": its member path is the file name.
        relative = item.name.split("/", 1)[-1] if kind == "folder" else item.member
        problem = unlabelled_problem(relative)
        if problem is None:
            images.append(item)
        else:
            ignored.append((item, problem))
    if not images:
        raise InputError(
            f"{path!r} holds no image files ({len(ignored)} other files or folders; images "
            f"are named *{', *'.join(IMAGE_EXTENSIONS)})"
        )
    return UnlabelledListing(images, ignored)
