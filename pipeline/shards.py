"""Reading shards: this worker's share of the files, interleaved, count-checked, parsed.

Both pipeline modes (``pipeline.dataset``) start here. A shard is read, counted and
parsed in chunks, so a truncated or corrupt shard stops the run with its name and
never drops records silently, and per-element tf.data overhead is paid per chunk.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging

from records import schema

# How many shards are read at once; more only adds open files and memory.
_MAX_CYCLE_LENGTH = 16

# Records are read, counted and parsed in chunks of this many per shard: per-element
# tf.data overhead (~5-10 us per stage and element) is then paid per chunk, not per record.
_READ_CHUNK = 64
# The features the pipeline needs: parsing only these skips the other strings.
_PARSE_KEYS: tuple[str, ...] = (schema.ENCODED, schema.HEIGHT, schema.WIDTH, schema.LABEL)


def _parse_chunk(serialized: tf.Tensor, with_filenames: bool = False) -> tuple[tf.Tensor, ...]:
    # tf.io.parse_example on a vector of records: one op call for the whole chunk.
    keys = _PARSE_KEYS + ((schema.FILENAME,) if with_filenames else ())
    features = tf.io.parse_example(serialized, {key: schema.FEATURE_SPEC[key] for key in keys})
    parsed = (
        features[schema.ENCODED],
        tf.cast(features[schema.HEIGHT], tf.int32),
        tf.cast(features[schema.WIDTH], tf.int32),
        tf.cast(features[schema.LABEL], tf.int32),
    )
    return parsed + ((features[schema.FILENAME],) if with_filenames else ())


def _read_checked_shard(
    path: tf.Tensor, expected: tf.Tensor, with_filenames: bool = False
) -> tf.data.Dataset:
    """Parsed examples (encoded, height, width, label) of one shard, in file order; fails
    naming the shard if it is corrupt or truncated.

    A plain TFRecordDataset reports corruption as ``DataLossError: corrupted record at
    N`` without the file name. Here the read error is logged and ends that shard's read
    (``ignore_errors`` moves on to the next file); records are then counted in chunks and
    an empty sentinel chunk after the last one checks the total against the manifest, so
    a damaged shard stops the run with an ``InvalidArgumentError`` naming it and never
    drops records silently (a clean cut at a record boundary is caught too). The count,
    the check and the parse run once per chunk of ``_READ_CHUNK`` records, and the chunk
    is unbatched here, inside the shard's reader, so the interleaved record order is the
    same as reading record by record.
    """
    chunks = tf.data.TFRecordDataset(path).ignore_errors(log_warning=True).batch(_READ_CHUNK)
    # Every real chunk holds >= 1 record, so an empty chunk marks the end of the shard.
    with_end = chunks.concatenate(tf.data.Dataset.from_tensors(tf.zeros([0], tf.string)))

    def count_and_check(count, chunk):
        size = tf.size(chunk, out_type=tf.int64)
        ok = tf.logical_or(size > 0, tf.equal(count, expected))
        assert_op = tf.debugging.Assert(
            ok,
            [
                "corrupt or truncated shard",
                path,
                "records read:",
                count,
                "expected (manifest):",
                expected,
                "-> run verify_records on the directory and rerun make_records to rewrite it",
            ],
        )
        with tf.control_dependencies([assert_op]):
            return count + size, tf.identity(chunk)

    checked = with_end.scan(tf.constant(0, tf.int64), count_and_check)
    return checked.map(lambda chunk: _parse_chunk(chunk, with_filenames)).unbatch()


def read_examples(
    files: list[str],
    counts: list[int],
    *,
    training: bool,
    deterministic: bool,
    seed: int | None,
    input_context: tf.distribute.InputContext | None,
    with_filenames: bool = False,
) -> tf.data.Dataset:
    """Parsed (encoded, height, width, label) of ``files``, this worker's share only,
    interleaved record by record; with ``with_filenames``, the raw ``image/filename``
    bytes as a fifth element (parsed in the same call, so in the same order)."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    file_ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(counts, tf.int64)))
    shard_examples = False
    if num_pipelines > 1:
        if len(files) >= num_pipelines:
            # Shard the file list before shuffling it: every worker must cut the same list.
            file_ds = file_ds.shard(num_pipelines, pipeline_id)
        else:
            # Every worker reads every file and keeps every n-th record: correct, disjoint
            # and complete, but each worker pays to read all the data.
            logging.warning(
                "%d shard file(s) for %d input pipelines: sharding by example instead of by "
                "file (each worker reads all files). Write at least %d shards "
                "(make_records --train_shards/--val_shards/--test_shards) to avoid this.",
                len(files),
                num_pipelines,
                num_pipelines,
            )
            shard_examples = True
    if training and not shard_examples:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = file_ds.interleave(
        lambda path, expected: _read_checked_shard(path, expected, with_filenames),
        cycle_length=min(len(files), _MAX_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        # Example sharding needs the same record order on every worker.
        deterministic=deterministic or shard_examples,
    )
    if shard_examples:
        records = records.shard(num_pipelines, pipeline_id)
    return records


def per_replica_batch_size(
    batch_size: int, input_context: tf.distribute.InputContext | None
) -> int:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if input_context is None:
        return batch_size
    if batch_size % input_context.num_replicas_in_sync:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by "
            f"{input_context.num_replicas_in_sync} replicas"
        )
    return input_context.get_per_replica_batch_size(batch_size)
