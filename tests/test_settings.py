"""Tests for core/settings.py: a settings dataclass -> absl flags -> a console script."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import app, flags

from conftest import REPO_ROOT, run_command
from core import settings

setting = settings.setting
SHAPES = ("square", "round")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """A command's settings, one of each kind."""

    records_dir: str = setting(help="Required: no default.")
    epochs: int = setting(10, "An integer with a minimum.", minimum=1)
    fraction: float = setting(0.2, "A float in [0, 1).", minimum=0, below=1)
    strength: float = setting(1.0, "A float with a maximum.", maximum=2)
    shape: str = setting("square", "An enum.", choices=SHAPES)
    cache: bool = setting(False, "A bool.")
    seed: int | None = setting(None, "Optional, no default value.")
    inputs: tuple[str, ...] = setting((), "Repeatable.", repeat=True, flag_name="input")
    sizes: tuple[str, ...] = setting(("32", "64"), "A comma-separated list.")
    internal: str = setting("x", flag=False)

    def __post_init__(self):
        settings.check(self)


def parse(*args: str) -> flags.FlagValues:
    """The flags of ``Config`` parsed from args, in a private FlagValues (no global state)."""
    flag_values = flags.FlagValues()
    settings.define_flags(Config, flag_values=flag_values)
    flag_values(["command", *args])
    return flag_values


def config_from(*args: str) -> Config:
    return settings.config_from_flags(Config, parse(*args))


def test_defaults_come_from_the_dataclass():
    config = config_from("--records_dir=r")
    assert config == Config(records_dir="r")
    assert (config.epochs, config.fraction, config.shape, config.cache) == (
        10,
        0.2,
        "square",
        False,
    )
    assert config.seed is None and config.inputs == () and config.sizes == ("32", "64")


def test_every_kind_of_flag_parses():
    config = config_from(
        "--records_dir=r",
        "--epochs=3",
        "--fraction=0.5",
        "--shape=round",
        "--cache",
        "--seed=7",
        "--input=a",
        "--input=b,c",  # repeatable: commas are kept
        "--sizes=1,2,3",
    )
    assert config.epochs == 3 and config.fraction == 0.5 and config.shape == "round"
    assert config.cache is True and config.seed == 7
    assert config.inputs == ("a", "b,c") and config.sizes == ("1", "2", "3")


def test_flag_name_and_library_only_fields():
    flag_values = parse("--records_dir=r")
    assert "input" in flag_values and "inputs" not in flag_values
    assert "internal" not in flag_values
    assert settings.flag_name(Config, "inputs") == "input"
    assert settings.flag_name(Config, "epochs") == "epochs"


def test_define_flags_is_idempotent():
    flag_values = flags.FlagValues()
    settings.define_flags(Config, flag_values=flag_values)
    settings.define_flags(Config, flag_values=flag_values)  # no DuplicateFlagError
    assert flag_values["epochs"].default == 10


def test_enum_flags_list_their_choices_and_refuse_others():
    flag_values = flags.FlagValues()
    settings.define_flags(Config, flag_values=flag_values)
    assert flag_values["shape"].parser.enum_values == list(SHAPES)
    with pytest.raises(flags.IllegalFlagValueError, match="oval"):
        flag_values(["command", "--records_dir=r", "--shape=oval"])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs=0 must be >= 1"),
        ("fraction", -0.1, "fraction=-0.1 must be >= 0"),
        ("fraction", 1.0, "fraction=1.0 must be < 1"),
        ("strength", 2.5, "strength=2.5 must be <= 2"),
        ("shape", "oval", "shape='oval': expected one of square, round"),
    ],
)
def test_check_enforces_bounds_and_choices_for_library_callers(field, value, message):
    with pytest.raises(ValueError) as error:
        Config(records_dir="r", **{field: value})
    assert str(error.value) == message


@pytest.mark.parametrize(
    "field, value", [("epochs", 1), ("fraction", 0.0), ("fraction", 0.999), ("strength", 2.0)]
)
def test_bounds_are_inclusive_except_below(field, value):
    assert getattr(Config(records_dir="r", **{field: value}), field) == value


def test_check_looks_at_every_item_of_a_tuple():
    @dataclasses.dataclass(frozen=True)
    class Shapes:
        shapes: tuple[str, ...] = setting(("square",), choices=SHAPES)
        sizes: tuple[int, ...] = setting((1,), minimum=1)

        def __post_init__(self):
            settings.check(self)

    assert Shapes(("round", "square"), (1, 5)).shapes == ("round", "square")
    with pytest.raises(ValueError, match="shapes='oval'"):
        Shapes(("round", "oval"))
    with pytest.raises(ValueError, match="sizes=0 must be >= 1"):
        Shapes(sizes=(3, 0))


def test_a_missing_required_flag_names_the_flag_and_its_help():
    with pytest.raises(app.UsageError) as error:
        config_from("--epochs=3")
    assert str(error.value) == "--records_dir is required (Required: no default.)"


def test_a_bad_value_is_reported_under_the_flags_name():
    with pytest.raises(app.UsageError) as error:
        config_from("--records_dir=r", "--epochs=0")
    assert str(error.value) == "--epochs=0 must be >= 1"


def test_an_error_in_post_init_names_the_flag_not_the_field():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Inputs:
        inputs: tuple[str, ...] = setting(("a",), repeat=True, flag_name="input")

        def __post_init__(self):
            if not self.inputs:
                raise ValueError("inputs: give at least one")

    flag_values = flags.FlagValues()
    settings.define_flags(Inputs, flag_values=flag_values)
    flag_values(["command"])
    with pytest.raises(app.UsageError, match="^--input: give at least one$"):
        settings.config_from_flags(Inputs, flag_values, inputs=())


def test_flagfile_gives_flags_one_per_line_and_the_command_line_wins(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--records_dir=from_file\n--epochs=4\n--shape=round\n--input=a\n")
    config = config_from(f"--flagfile={flagfile}", "--epochs=5")
    assert config.records_dir == "from_file" and config.epochs == 5 and config.shape == "round"
    assert config.inputs == ("a",)


def test_a_field_with_no_flag_type_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        mapping: dict = setting(None)

    with pytest.raises(TypeError, match="Odd.mapping: no flag type"):
        settings.define_flags(Odd, flag_values=flags.FlagValues())


def test_the_settings_line_holds_only_what_differs_from_the_defaults():
    assert settings.non_default_flags(Config(records_dir="r")) == "--records_dir=r"
    config = Config(
        records_dir="r",
        epochs=3,
        cache=True,
        inputs=("a", "b"),
        sizes=("1", "2"),
        shape="square",  # the default, given explicitly: still a default
        internal="y",  # no flag
    )
    assert settings.non_default_flags(config) == (
        "--records_dir=r --epochs=3 --cache --input=a --input=b --sizes=1,2"
    )


# Console scripts in a child process, with the environment a user has: no
# TF_CPP_MIN_LOG_LEVEL (each command sets its own default).
def _user_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": str(REPO_ROOT)}


def _console_script(name: str, *args: str) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), name)
    return subprocess.run(
        [script, *args],
        env=_user_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_help_shows_no_tensorflow_log_lines_and_exits_0():
    # train --help loads TensorFlow (its settings' choices live next to TF code).
    result = _console_script("train", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no C++ lines (oneDNN, CUDA), nothing else either
    assert "--records_dir: Directory made by make_records." in result.stdout
    assert "--augment: <fused|keras_cv_data|keras_cv_model|none>" in result.stdout


def test_a_missing_required_flag_is_one_error_line_and_exit_2(tmp_path):
    result = run_command("trainer.train", f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 2
    assert result.stdout == ""  # no help dump
    assert result.stderr.splitlines() == [
        "train: error: --records_dir is required (Directory made by make_records.)"
    ]
    assert not (tmp_path / "model").exists()


def test_a_run_logs_its_settings_as_the_non_default_flags(tmp_path):
    records_dir, model_dir = tmp_path / "no_records", tmp_path / "model"
    result = run_command(
        # --recipe=none: the plain defaults, so only what the command line changes differs
        # (with the default recipe the line also lists its values).
        "trainer.train",
        "--recipe=none",
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        "--epochs=3",
    )
    assert result.returncode == 2
    settings_lines = [line for line in result.stderr.splitlines() if "settings.py" in line]
    assert len(settings_lines) == 1, result.stderr
    assert settings_lines[0].endswith(
        f"] train --records_dir={records_dir} --model_dir={model_dir} --epochs=3"
    )
    assert result.stderr.splitlines()[-1].startswith("train: error: no manifest.json in ")
    assert result.stderr.count("train: error:") == 1


# Presets (``train --recipe``): a preset field chooses named values for the other fields.
PRESET_VALUES = {"long": {"epochs": 50, "shape": "round"}, "short": {"epochs": 2}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PresetConfig(Config):
    preset: str = setting("none", "The preset.", choices=(*PRESET_VALUES, "none"))


def _lookup(name: str) -> dict:
    if name not in PRESET_VALUES:
        raise ValueError(f"preset={name!r}: no such preset")
    return PRESET_VALUES[name]


PRESETS = settings.Presets(field="preset", default="long", lookup=_lookup)


def preset_config_from(*args: str, flagfile=None) -> PresetConfig:
    flag_values = flags.FlagValues()
    settings.define_flags(PresetConfig, flag_values=flag_values, presets=PRESETS)
    flag_values(["command", *args])
    return settings.config_from_flags(PresetConfig, flag_values, presets=PRESETS)


def test_the_default_preset_applies_and_its_values_are_the_flags_defaults():
    flag_values = flags.FlagValues()
    settings.define_flags(PresetConfig, flag_values=flag_values, presets=PRESETS)
    # --help shows what a run with no flags does: the default preset's values.
    assert flag_values["epochs"].default == 50 and flag_values["shape"].default == "round"
    assert flag_values["preset"].default == "long"
    config = preset_config_from("--records_dir=r")
    assert (config.preset, config.epochs, config.shape) == ("long", 50, "round")


def test_a_preset_fills_the_flags_not_given_and_an_explicit_flag_wins(tmp_path):
    config = preset_config_from("--records_dir=r", "--preset=short", "--shape=round")
    # epochs from the preset, shape given explicitly, cache from the field's default.
    assert (config.preset, config.epochs, config.shape, config.cache) == (
        "short",
        2,
        "round",
        False,
    )
    # Not the default preset's shape: a preset not named is not applied at all.
    assert preset_config_from("--records_dir=r", "--preset=short").shape == "square"
    # An explicit value equal to the field's default still wins over the preset.
    assert preset_config_from("--records_dir=r", "--epochs=10").epochs == 10
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--epochs=7\n")
    assert preset_config_from("--records_dir=r", f"--flagfile={flagfile}").epochs == 7


def test_preset_none_is_the_fields_own_defaults():
    config = preset_config_from("--records_dir=r", "--preset=none")
    assert config == PresetConfig(records_dir="r")


def test_a_required_flag_is_still_required_under_a_preset():
    with pytest.raises(app.UsageError, match=r"--records_dir is required"):
        preset_config_from("--preset=short")
