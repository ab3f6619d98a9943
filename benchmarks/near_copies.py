"""Folders of real photos with planted problems, for the data audit's tests and benchmark.

A planted near-duplicate is a photo saved again the way copies arise in the wild
(``TRANSFORMS``: re-encoded at another JPEG quality, resized, mirrored, cropped by 5%);
a planted label flip is a photo filed under the other class's name. Inputs are linked,
not copied (the sample stays where it is); planted copies are new JPEG files.
File names keep the Kaggle convention (the label is the word before the first dot).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageOps


def reencoded(image: Image.Image) -> Image.Image:
    # Saved again at another quality by ``plant``'s save (quality 50, not the original's).
    return image


def resized(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width * 3 // 5), max(1, image.height * 3 // 5)))


def mirrored(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def cropped(image: Image.Image) -> Image.Image:
    # 5% off each dimension, from the top-left corner (the same framing a re-post trims).
    dx, dy = round(image.width * 0.05), round(image.height * 0.05)
    return image.crop((dx, dy, image.width, image.height))


# name -> (transform, JPEG quality of the saved copy)
TRANSFORMS: dict[str, tuple[Callable[[Image.Image], Image.Image], int]] = {
    "reencoded": (reencoded, 50),
    "resized": (resized, 90),
    "mirrored": (mirrored, 90),
    "cropped": (cropped, 90),
}


@dataclasses.dataclass(frozen=True)
class Planted:
    """What ``build_folder`` planted.

    Attributes:
      pairs: (original file name, copy file name, transform) per planted near-duplicate.
      flips: (file name as planted, true label) per planted label flip.
    """

    pairs: tuple[tuple[str, str, str], ...]
    flips: tuple[tuple[str, str], ...]


def label_of(name: str) -> str:
    return name.split(".", 1)[0]


def plant_copy(source: str, destination: str, transform: str) -> None:
    """Writes ``transform`` of the photo at ``source`` to ``destination`` as a JPEG."""
    function, quality = TRANSFORMS[transform]
    with Image.open(source) as image:
        function(image.convert("RGB")).save(destination, quality=quality)


def build_folder(
    source_dir: str,
    destination: str,
    *,
    num_pairs: int = 40,
    num_flips: int = 20,
    avoid: Sequence[str] = (),
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> Planted:
    """Links every photo of ``source_dir`` into ``destination``, with planted problems.

    ``num_pairs`` photos get a near-duplicate copy (the transforms in turn); ``num_flips``
    other photos are linked under the other class's name instead of their own (the
    original name is not linked, so a flip is not also a duplicate). Photos in ``avoid``
    are neither copied nor flipped. ``names``: only these photos of ``source_dir``
    (default: all).
    """
    os.makedirs(destination, exist_ok=True)
    if names is None:
        names = [n for n in os.listdir(source_dir) if n.lower().endswith(".jpg")]
    names = sorted(names)
    candidates = [n for n in names if n not in set(avoid)]
    chosen = random.Random(seed).sample(candidates, num_pairs + num_flips)
    copied, flipped = chosen[:num_pairs], set(chosen[num_pairs:])
    transforms = list(TRANSFORMS)
    pairs, flips = [], []
    for name in names:
        target = name
        if name in flipped:
            other = "dog" if label_of(name) == "cat" else "cat"
            target = f"{other}.flipped-{name}"
            flips.append((target, label_of(name)))
        os.symlink(os.path.join(source_dir, name), os.path.join(destination, target))
    for index, name in enumerate(copied):
        transform = transforms[index % len(transforms)]
        copy = f"{name[: -len('.jpg')]}.{transform}.jpg"
        plant_copy(os.path.join(source_dir, name), os.path.join(destination, copy), transform)
        pairs.append((name, copy, transform))
    return Planted(pairs=tuple(pairs), flips=tuple(flips))
