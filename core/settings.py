"""Command-line settings from one frozen dataclass per command (like ml_collections' config flags).

Each setting is written once, as a dataclass field made with ``setting()``: its default,
one line of help and, where they apply, its allowed values (``choices=``, a tuple defined
next to the code that branches on it) and bounds. From that one definition:

* ``define_flags(Config)`` defines the absl flags (``--name=value``; ``--flagfile`` and
  ``--help`` come with absl), enums as ``DEFINE_enum`` so ``--help`` lists the choices;
* ``check(config)`` (called by each config's ``__post_init__``) enforces choices and
  bounds, so library callers get the same checks as the command line;
* ``run(Config, main, __name__)`` is a console script: flags -> config -> ``main(config)``,
  with one line ``command: error: ...`` and exit status 2 for the errors a user can fix,
  and the settings logged as the flags that differ from their defaults;
* ``Presets``: named sets of values chosen by one flag (``train --recipe=NAME``, like the
  Model Garden's ``--experiment``): a flag given on the command line wins, then the
  chosen preset's value, then the field's default. The default preset's values are the
  flags' defaults, so ``--help`` shows what a run with no flags does.

It lives in ``core``, the bottom package every command imports; it imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app, flags, logging

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Presets:
    """Named sets of field values, chosen by the field ``field`` (a flag like the others).

    Attributes:
      field: The choosing field (``"recipe"``); its value names the preset.
      default: The preset of a command line that does not name one.
      lookup: A preset's name -> its field values (raises ValueError for an unknown one).
      none: The name that applies no preset: the fields' own defaults.
    """

    field: str
    default: str
    lookup: Callable[[str], Mapping[str, Any]]
    none: str = "none"

    def values(self, name: str) -> Mapping[str, Any]:
        return {} if name == self.none else {**self.lookup(name), self.field: name}


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002 - the word absl uses
    *,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    repeat: bool = False,
    flag: bool = True,
    flag_name: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag.

    Args:
      default: The default; leave it out for a required setting.
      help: One line for ``--help``.
      choices: Allowed values (an enum flag).
      minimum: Smallest allowed value (inclusive).
      maximum: Largest allowed value (inclusive).
      below: Exclusive upper bound.
      repeat: For a tuple of strings: a repeatable flag (``--input=a --input=b``) rather
        than one comma-separated list.
      flag: False for a library-only field with no flag.
      flag_name: The flag's name when it differs from the field's (``--input`` for a
        tuple field ``inputs``).
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "minimum": minimum,
        "maximum": maximum,
        "below": below,
        "repeat": repeat,
        "flag": flag,
        "flag_name": flag_name,
    }
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else args), len(args) < len(typing.get_args(annotation))
    return annotation, False


def _flag_fields(config_cls: type) -> list[tuple[dataclasses.Field, str, Any]]:
    """(field, flag name, type) of every field that is a flag."""
    hints = typing.get_type_hints(config_cls)
    return [
        (f, f.metadata["flag_name"] or f.name, hints[f.name])
        for f in dataclasses.fields(config_cls)
        if f.metadata.get("flag")
    ]


def flag_name(config_cls: type, field_name: str) -> str:
    """The flag of a field (its own name unless ``setting(flag_name=...)`` says otherwise)."""
    field = {f.name: f for f in dataclasses.fields(config_cls)}.get(field_name)
    return (field.metadata.get("flag_name") if field else None) or field_name


def define_flags(
    config_cls: type,
    module_name: str | None = None,
    flag_values: flags.FlagValues = FLAGS,
    presets: Presets | None = None,
) -> None:
    """Defines one absl flag per ``setting()`` field of ``config_cls`` (idempotent).

    Called at run time, not import, so a process importing several entry points (the
    test suite) never defines a flag twice. With ``presets``, a flag's default is the
    default preset's value where it has one.
    """
    preset = presets.values(presets.default) if presets else {}
    for field, name, annotation in _flag_fields(config_cls):
        if name in flag_values:
            continue
        meta = field.metadata
        default = None if field.default is dataclasses.MISSING else field.default
        default = preset.get(field.name, default)
        kind, _ = _base_type(annotation)
        common = {"module_name": module_name, "flag_values": flag_values}
        if kind is bool:
            flags.DEFINE_bool(name, default, meta["help"], **common)
        elif kind is int:
            flags.DEFINE_integer(name, default, meta["help"], **common)
        elif kind is float:
            flags.DEFINE_float(name, default, meta["help"], **common)
        elif kind is str and meta["choices"]:
            flags.DEFINE_enum(name, default, list(meta["choices"]), meta["help"], **common)
        elif kind is str:
            flags.DEFINE_string(name, default, meta["help"], **common)
        elif typing.get_origin(kind) is tuple:
            default = list(default) if default else None
            if meta["repeat"]:
                flags.DEFINE_multi_string(name, default, meta["help"], **common)
            else:
                flags.DEFINE_list(name, default, meta["help"], **common)
        else:
            raise TypeError(f"{config_cls.__name__}.{field.name}: no flag type for {annotation}")


def config_from_flags(
    config_cls: type,
    flag_values: flags.FlagValues = FLAGS,
    presets: Presets | None = None,
    **overrides: Any,
) -> Any:
    """Builds ``config_cls`` from the parsed flags (after ``define_flags``).

    With ``presets``: a flag given on the command line (or in a --flagfile) wins, then the
    chosen preset's value, then the field's own default.

    Raises:
      app.UsageError: For a missing required flag or a bad value (or preset), naming the flag.
    """
    preset: Mapping[str, Any] = {}
    if presets is not None:
        try:
            preset = presets.values(flag_values[flag_name(config_cls, presets.field)].value)
        except ValueError as e:
            raise app.UsageError(f"--{e}") from None
    values = {}
    for field, name, _ in _flag_fields(config_cls):
        value = flag_values[name].value
        if presets is not None and not flag_values[name].present:
            value = preset.get(field.name, field.default)
            if value is dataclasses.MISSING:
                value = None
        if value is None and field.default is dataclasses.MISSING:
            raise app.UsageError(f"--{name} is required ({field.metadata['help']})")
        if value is None and field.default is not dataclasses.MISSING:
            value = field.default
        if isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    values.update(overrides)
    try:
        return config_cls(**values)
    except ValueError as e:
        # check() starts the message with the field's name; say the flag's.
        field_name = str(e).split("=", 1)[0].split(":", 1)[0].split(" ", 1)[0]
        message = str(e)
        if field_name.isidentifier():
            message = flag_name(config_cls, field_name) + message[len(field_name) :]
        raise app.UsageError(f"--{message}") from None


def check(config: Any) -> None:
    """Enforces every field's ``choices`` and bounds; call it from ``__post_init__``.

    Raises:
      ValueError: ``name=value: what is allowed`` for the first bad field.
    """
    for field in dataclasses.fields(config):
        meta, value = field.metadata, getattr(config, field.name)
        if value is None or not meta:
            continue
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if meta.get("choices") and item not in meta["choices"]:
                raise ValueError(
                    f"{field.name}={item!r}: expected one of {', '.join(map(str, meta['choices']))}"
                )
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if meta.get("minimum") is not None and item < meta["minimum"]:
                raise ValueError(f"{field.name}={item} must be >= {meta['minimum']}")
            if meta.get("maximum") is not None and item > meta["maximum"]:
                raise ValueError(f"{field.name}={item} must be <= {meta['maximum']}")
            if meta.get("below") is not None and item >= meta["below"]:
                raise ValueError(f"{field.name}={item} must be < {meta['below']}")


USER_ERROR = 2
"""Exit status of a run stopped by a user error (a bad flag, a missing input, a busy folder)."""


def non_default_flags(config: Any) -> str:
    """The flags of ``config`` whose values differ from their defaults, as a command line.

    Required settings always differ. One short line for the log: the rest are defaults
    (``--help`` lists them), and the whole config goes wherever a command records it.
    """
    parts = []
    for field, name, _ in _flag_fields(type(config)):
        value = getattr(config, field.name)
        if field.default is not dataclasses.MISSING and value == field.default:
            continue
        if isinstance(value, bool):
            parts.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, tuple) and field.metadata["repeat"]:
            parts.extend(f"--{name}={item}" for item in value)
        elif isinstance(value, tuple):
            parts.append(f"--{name}={','.join(map(str, value))}")
        else:
            parts.append(f"--{name}={value}")
    return " ".join(parts) or "(all defaults)"


def program_name(module_name: str) -> str:
    """The name a command reports errors under: the console script's, or under
    ``python -m`` (where ``__name__`` is ``"__main__"``) the module's own."""
    spec = getattr(sys.modules[module_name], "__spec__", None)
    program = os.path.basename(sys.argv[0])
    if program.endswith(".py") or program == "-m":
        program = spec.name.rsplit(".", 1)[-1] if spec else program.removesuffix(".py")
    return program


def run(
    config_cls: type,
    main: Callable[[Any], int | None],
    module_name: str,
    *,
    errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError),
    presets: Presets | None = None,
) -> None:
    """Runs a console script: flags -> ``config_cls`` -> ``main(config)`` -> exit status.

    A user error ends the run with one line on stderr, ``<command>: error: <what to
    do>``, no traceback, and exit status ``USER_ERROR`` (2), as argparse does: a flag
    absl cannot parse, a missing required flag or a bad value, and the ``errors`` that
    ``main`` raises for what a user can fix (a bad path, a setting that does not fit the
    data, a busy output folder; ``--verbosity=1`` logs their traceback too). ``--help``
    exits 0. The settings are logged as one line of the flags that differ from their
    defaults.

    Args:
      config_cls: The command's settings dataclass.
      main: Takes the config, returns the exit status (None = 0).
      module_name: ``__name__`` of the entry module (whose docstring ``--help`` shows).
      errors: Exception types reported as a user error.
      presets: Named sets of settings one flag chooses (``Presets``).
    """
    define_flags(config_cls, module_name, presets=presets)
    program = program_name(module_name)

    def user_error(message: str) -> int:
        print(f"{program}: error: {message}", file=sys.stderr)
        return USER_ERROR

    configs = []

    def parse_flags(argv: list[str]) -> list[str]:
        # The config too, not only the flags: absl runs its init callbacks after this
        # and before main, and one of TensorFlow's probes the GPUs (a C++ error line on a
        # machine without a driver); a mistyped flag should not wait for that.
        try:
            argv = FLAGS(argv)
        except flags.Error as e:
            sys.exit(user_error(str(e)))
        except SystemExit as e:
            # absl's --help (--helpshort, --helpfull) prints the help, then exits 1;
            # asking for help is no failure.
            raise SystemExit(0 if e.code == 1 else e.code) from None
        if len(argv) > 1:
            sys.exit(user_error(f"unexpected arguments {argv[1:]}; every setting is a --flag"))
        try:
            configs.append(config_from_flags(config_cls, presets=presets))
        except app.UsageError as e:
            sys.exit(user_error(str(e)))
        return argv

    def absl_main(argv: list[str]) -> int:
        (config,) = configs
        logging.info("%s %s", program, non_default_flags(config))
        try:
            return main(config) or 0
        except errors as e:
            logging.debug("details", exc_info=True)
            return user_error(str(e))

    # A console script's __main__ is a generated stub with no docstring and no flags of
    # its own, so absl's --help would show neither; point it at the entry module's.
    module = sys.modules[module_name]
    main_module = sys.modules["__main__"]
    if main_module is not module:
        if not main_module.__doc__:
            main_module.__doc__ = module.__doc__
        for flag in FLAGS.get_flags_for_module(module_name):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(absl_main, flags_parser=parse_flags)
