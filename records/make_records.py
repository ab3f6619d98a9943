"""make_records: labelled images -> sharded TFRecords + manifest.json.

Usage:
  make_records --input=../shared/data/dogs-vs-cats/train --output_dir=build/records
  make_records --input=train.zip --input=extra.csv --output_dir=build/records \\
      --max_short_side=160 --verify

--input (repeatable) is a Kaggle-style folder (cat.1.jpg ...), a folder-per-class
layout (cats/ dogs/), the Kaggle train.zip itself, or a table (.csv/.tsv/.parquet ...)
with filename,label columns. Rerunning the same command after an interruption finishes
the conversion.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from records import cli, sources, verify, writer

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines make_records' flags (idempotent).

    Called by ``run()`` rather than at import, so that importing this module (in a test
    process that also imports other entry points) never collides with their flags.
    """
    if "input" in flag_values:
        return
    define = dict(flag_values=flag_values)
    flags.DEFINE_multi_string(
        "input",
        None,
        "Folder, .zip or table of labelled images; repeat for several inputs.",
        **define,
    )
    flags.DEFINE_string("output_dir", None, "Directory for the shards and manifest.json.", **define)
    flags.DEFINE_float(
        "val_fraction",
        0.2,
        "Fraction of images for the val split (chosen by sha256, stable).",
        **define,
    )
    flags.DEFINE_integer(
        "train_shards", None, "Train shard count (default: ~150 MB each, >= 4).", **define
    )
    flags.DEFINE_integer(
        "val_shards", None, "Val shard count (default: ~150 MB each, >= 2).", **define
    )
    flags.DEFINE_integer(
        "max_short_side",
        None,
        "Store a re-encoded copy whose shorter side is at most this (never upscaled); "
        "default keeps the original JPEG bytes.",
        **define,
    )
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality for re-encoded images (1-95).", **define)
    flags.DEFINE_integer(
        "num_workers",
        os.cpu_count() or 1,
        "Worker processes for reading and decoding images.",
        **define,
    )
    flags.DEFINE_bool(
        "single_process", False, "Run everything in this process (for debugging).", **define
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace a different conversion in --output_dir.", **define
    )
    flags.DEFINE_bool(
        "verify",
        False,
        "Afterwards, read every shard back and check it (as verify_records).",
        **define,
    )


def options_from_flags(flag_values: flags.FlagValues = FLAGS) -> writer.ConvertOptions:
    """Builds the conversion options from parsed flags.

    Raises:
      app.UsageError: For a missing flag or a bad value, naming the flag.
    """
    fv = flag_values
    if not fv.input:
        raise app.UsageError("--input is required (a folder, .zip or table of labelled images)")
    if not fv.output_dir:
        raise app.UsageError("--output_dir is required")
    if fv.single_process and fv["num_workers"].present and fv.num_workers != 1:
        raise app.UsageError("--single_process conflicts with --num_workers; pass only one")
    try:
        return writer.ConvertOptions(
            inputs=tuple(fv.input),
            output_dir=fv.output_dir,
            val_fraction=fv.val_fraction,
            train_shards=fv.train_shards,
            val_shards=fv.val_shards,
            max_short_side=fv.max_short_side,
            jpeg_quality=fv.jpeg_quality,
            num_workers=1 if fv.single_process else fv.num_workers,
            overwrite=fv.overwrite,
        )
    except ValueError as e:
        # The dataclass names the field; the flag has the same name.
        raise app.UsageError(f"bad flag value: --{e}") from None


def convert_and_report(options: writer.ConvertOptions, verify_after: bool) -> int:
    """Runs the conversion, logs the outcome; returns the process exit code."""
    logging.info("make_records settings: %s", options)
    try:
        result = writer.convert(options)
    except (sources.InputError, writer.OutputDirError) as e:
        logging.error("%s", e)
        return 2
    except KeyboardInterrupt:
        logging.error("interrupted; rerun the same command to finish the conversion")
        return 130
    except OSError as e:
        # E.g. --output_dir not writable or the disk full: say so, no traceback.
        logging.error("cannot write the records: %s; fix this and rerun the same command", e)
        return 1
    accounting = result.manifest["accounting"]
    splits = result.manifest["splits"]
    logging.info(
        "%s: %d inputs -> %d written (train %d, val %d), %d skipped, %d duplicates, "
        "%d converted, %d resized; %d shard(s) reused; %.1f s",
        options.output_dir,
        accounting["inputs_found"],
        accounting["written"],
        splits["train"]["num_examples"],
        splits["val"]["num_examples"],
        accounting["skipped"],
        accounting["duplicates"],
        accounting["converted"],
        accounting["resized"],
        result.shards_reused,
        result.seconds,
    )
    for entry in result.manifest["skipped"][:20]:
        logging.warning("skipped %s: %s", entry["path"], entry["reason"])
    if accounting["skipped"] > 20:
        logging.warning("... and %d more; see manifest.json", accounting["skipped"] - 20)
    if verify_after:
        problems = verify.verify_records(options.output_dir)
        verify.report(options.output_dir, problems)
        if problems:
            return 1
    return 0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    options = options_from_flags(FLAGS)
    sys.exit(convert_and_report(options, FLAGS.verify))


def run() -> None:
    cli.run(main, __name__, define_flags)


if __name__ == "__main__":
    run()
