r"""Named training recipes, each defined once: ``train --recipe=NAME``, ``make demo RECIPE=NAME``.

A recipe is data, like the Model Garden's registered experiment configs or big_vision's
config files: how its records are stored (``RecordsSpec``, what ``make_records`` is
given) and the ``train`` settings it changes from ``TrainConfig``'s defaults. On the
command line a flag given explicitly wins over the recipe, and the recipe over the
defaults (``core.settings.Presets``); a ``train`` run that names no recipe runs
``DEFAULT``, so ``train --records_dir=... --model_dir=...`` alone is the demo, which
needs no download and runs on a 2-core CPU. ``--recipe=none`` applies none (the plain
``TrainConfig`` defaults). The Makefile reads a recipe's records settings and its
evaluation from this module:

  python -m trainer.training.recipes --recipe=accurate --print=split_flags

The measured results of each recipe are in docs/training.md ("Recipes").

This module imports no TensorFlow (the Makefile runs it before anything heavy).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Mapping
from typing import Any

from core import settings


@dataclasses.dataclass(frozen=True)
class RecordsSpec:
    """How a recipe's records are made (``make_records`` flags).

    Attributes:
      max_short_side: The stored images' shorter side: 9/8 of the training size or more,
        so the random crop has pixels to choose from and nothing is upscaled.
      val_fraction: The split every choice is made on (epochs, the best checkpoint).
      test_fraction: The split no choice is made on: the recipe's headline figure.
    """

    max_short_side: int
    # 10% val (600 of the sample's 6,001): enough to choose epochs with; 20% test (1,200):
    # a standard error of ~0.25 point at 99% accuracy; 70% (4,200) left to train on.
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    @property
    def split_flags(self) -> str:
        return f"--val_fraction={self.val_fraction} --test_fraction={self.test_fraction}"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One named recipe.

    Attributes:
      name: The ``--recipe`` value.
      summary: One line for ``--help`` and the docs.
      records: How its records are stored.
      train: ``TrainConfig`` field -> value, the settings that differ from the defaults.
      tta: What ``evaluate --tta`` the recipe's figures use ("none" or "flip").
    """

    name: str
    summary: str
    records: RecordsSpec
    train: Mapping[str, Any]
    tta: str = "none"


# What every EfficientNet-Lite head recipe shares: the frozen base runs once over the
# records and the head (global average pooling, dense 256, dropout 0.5) trains on its
# output. Adam at 1e-3 reaches its best val accuracy in 2-5 epochs.
_LITE_HEAD = types.MappingProxyType(
    {
        "weights": "imagenet",
        "input_mode": "features",
        "augment": "none",  # Each image passes the frozen base once, un-augmented.
        "pooling": "avg",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "batch_size": 64,
    }
)

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "demo",
            "EfficientNet-Lite0's frozen ImageNet features at 192 px, a head trained 5 epochs, "
            "the best epoch kept (a few minutes on 2 CPU cores)",
            # 192, not the old 160: 0.991 against 0.980 on test (seed 1) for ~1.4x the
            # base's pass, still a demo of a few minutes (docs/training.md).
            RecordsSpec(max_short_side=192),
            {**_LITE_HEAD, "backbone": "efficientnet_lite0", "image_size": 192, "epochs": 5},
        ),
        Recipe(
            "frozen",
            "The most accurate frozen-feature recipe: EfficientNet-Lite2's features at its "
            "native 260 px, a head only (the accurate recipe without its fine-tune phase)",
            RecordsSpec(max_short_side=292),
            {**_LITE_HEAD, "backbone": "efficientnet_lite2", "image_size": 260, "epochs": 5},
            tta="flip",
        ),
        Recipe(
            "accurate",
            "EfficientNet-Lite2 at 260 px: the head on frozen features, then the last stage "
            "and head convolution fine-tuned on a cache of the frozen bottom's output for 4 "
            "augmented views of each photo, test-time flips",
            RecordsSpec(max_short_side=292),
            {
                **_LITE_HEAD,
                "backbone": "efficientnet_lite2",
                "image_size": 260,
                "epochs": 5,
                "augment": "fused",  # For the fine-tune's views (phase one ignores it).
                "fine_tune_epochs": 8,
                "fine_tune_learning_rate": 1e-4,
                "fine_tune_lr_schedule": "warmup_cosine",
                "fine_tune_cached_views": 4,
                # The fine-tune runs its whole cosine schedule and its last epoch is
                # shipped: 641 val photos cannot tell 0.995 from 0.997 (the first run had
                # val_accuracy tied at 0.9953 in 7 of 11 epochs, so early stopping ended
                # the fine-tune and the best-epoch rule shipped the head's epoch 4).
                "early_stopping_patience": 0,
                "restore_best": False,
            },
            tta="flip",
        ),
        Recipe(
            "vgg16",
            "The card's recipe: VGG16 (ImageNet weights) at 128 px, its first 15 layers "
            "frozen, flatten + dense 256 + dropout 0.5 + softmax, SGD; a GPU job that needs "
            "the weights file (downloaded by Keras, or --weights=PATH offline)",
            RecordsSpec(max_short_side=160),
            {
                "backbone": "vgg16",
                "weights": "imagenet",
                "image_size": 128,
                "freeze_layers": 15,
                "pooling": "flatten",
                "dense_units": 256,
                "dropout": 0.5,
                "head": "softmax",
                "optimizer": "sgd",
                "learning_rate": 1e-4,
                "momentum": 0.9,
                "augment": "fused",
                "input_mode": "stream",
                "batch_size": 64,
                "epochs": 10,
            },
        ),
        Recipe(
            "small_cnn",
            "A 1.2 M-weight CNN from scratch at 96 px with half-strength augmentation (no "
            "pretrained weights at all)",
            RecordsSpec(max_short_side=160),
            {
                "backbone": "small_cnn",
                "weights": "none",
                "freeze_layers": 0,
                "image_size": 96,
                "batch_size": 32,
                "augment": "fused",
                "augment_strength": 0.5,
                "pooling": "avg",
                "optimizer": "adam",
                "learning_rate": 1e-3,
                "lr_schedule": "cosine",
                "input_mode": "stream",
                "epochs": 5,
            },
        ),
    )
}
NAMES: tuple[str, ...] = tuple(RECIPES)
NONE = "none"
DEFAULT = "demo"


def get(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
      ValueError: No such recipe.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r}: expected one of {', '.join((*NAMES, NONE))}")
    return RECIPES[name]


PRESETS = settings.Presets(
    field="recipe", default=DEFAULT, lookup=lambda name: get(name).train, none=NONE
)


def _print(name: str, what: str) -> str:
    recipe = get(name)
    if what == "split_flags":
        return recipe.records.split_flags
    if what == "max_short_side":
        return str(recipe.records.max_short_side)
    if what == "tta":
        return recipe.tta
    raise ValueError(f"--print={what}: expected split_flags, max_short_side or tta")


if __name__ == "__main__":
    # No absl here: the Makefile calls this for one value, before TensorFlow is involved.
    args = dict(arg.removeprefix("--").split("=", 1) for arg in sys.argv[1:])
    try:
        print(_print(args["recipe"], args["print"]))
    except (KeyError, ValueError) as e:
        sys.exit(
            f"recipes: error: {e} (usage: --recipe=NAME --print=split_flags|max_short_side|tta)"
        )
