"""make_records: labelled images -> sharded TFRecords + manifest.json.

Usage:
  make_records --input=../shared/data/dogs-vs-cats/train --output_dir=build/records
  make_records --input=train.zip --input=extra.csv --output_dir=build/records \\
      --max_short_side=160 --verify

--input (repeatable) is a Kaggle-style folder (cat.1.jpg ...), a folder-per-class
layout (cats/ dogs/), the Kaggle train.zip itself, or a table (.csv/.tsv/.parquet ...)
with filename,label columns. --exclude leaves out the images a file names (a list, or
the data audit's data_issues.csv; see records.exclude). Rerunning the same command after
an interruption finishes the conversion.
"""

from __future__ import annotations

from absl import logging

from core import settings
from records import exclude
from records.convert_options import ConvertOptions


def convert_and_report(options: ConvertOptions) -> int:
    """Runs the conversion, logs the outcome; returns the process exit code.

    Raises:
      InputError, OutputDirError: A user error (``settings.run`` reports it).
    """
    # Here, not at the top: they load TensorFlow, which --help does not need (5 s).
    import tensorflow as tf

    from records import schema, verify, writer

    # Parallel over photos, not inside one: records.photo runs several photos at once
    # (threads, each a tf.map_fn over a batch), and splitting each of its many small ops
    # over the intra-op pool as well cost more in hand-offs than it gained: make_records
    # at 160 px ran at 802 and 821 images/s with one intra-op thread against 611 and 637
    # with the default, alternating on the sample (2 cores, load 1.7-2.4); full size
    # 1,484 and 1,550 against 1,545 and 1,476.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow has already run in this process (a test, a notebook): as it is.
    try:
        result = writer.convert(options)
    except KeyboardInterrupt:
        logging.error("interrupted; rerun the same command to finish the conversion")
        return 130
    except OSError as e:
        # E.g. --output_dir not writable or the disk full: say so, no traceback.
        logging.error("cannot write the records: %s; fix this and rerun the same command", e)
        return 1
    accounting = result.manifest["accounting"]
    splits = result.manifest["splits"]
    # Every split the conversion has, in schema order (a manifest read back from the file,
    # as for a conversion found done, has its keys sorted): "train 80, val 20[, test 10]".
    per_split = ", ".join(
        f"{name} {splits[name]['num_examples']}" for name in schema.SPLITS if name in splits
    )
    logging.info(
        "%s: %d inputs -> %d written (%s), %d skipped, %d duplicates, "
        "%d converted, %d resized; folders %d found -> %d read, %d skipped; "
        "%d shard(s) reused; %.1f s",
        options.output_dir,
        accounting["inputs_found"],
        accounting["written"],
        per_split,
        accounting["skipped"],
        accounting["duplicates"],
        accounting["converted"],
        accounting["resized"],
        accounting["folders_found"],
        accounting["folders_read"],
        accounting["folders_skipped"],
        result.shards_reused,
        result.seconds,
    )
    # Images left out by --exclude were asked for: one line, not a warning each.
    others = [e for e in result.manifest["skipped"] if e["reason"] != exclude.REASON]
    excluded = accounting["skipped"] - len(others)
    if options.exclude:
        unmatched = result.manifest["settings"]["exclude"]["unmatched"]
        logging.info(
            "%d of the skipped were excluded by audit (--exclude %s; %d of its names "
            "matched no input); listed in manifest.json",
            excluded,
            options.exclude,
            unmatched,
        )
    for entry in others[:20]:
        logging.warning("skipped %s: %s", entry["path"], entry["reason"])
    if len(others) > 20:
        logging.warning("... and %d more; see manifest.json", len(others) - 20)
    if options.verify:
        problems = verify.verify_records(options.output_dir)
        verify.report(options.output_dir, problems)
        if problems:
            return 1
    return 0


def run() -> None:
    settings.run(ConvertOptions, convert_and_report, __name__)


if __name__ == "__main__":
    run()
