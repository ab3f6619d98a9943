"""End-to-end tests of the make_records command: in this process (``conftest.run_command``), and
in processes of their own where a kill and its resume need them."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal

import pytest
from absl import app, flags

from conftest import (
    run_command,
    run_make_records,
    run_make_records_killed_after,
    write_kaggle_folder,
)
from core import settings
from records import make_records, schema, writer
from records.convert_options import ConvertOptions
from records.inputs import sources


def parse(*args: str) -> flags.FlagValues:
    """make_records' flags parsed from args, in a private FlagValues (no global state)."""
    flag_values = flags.FlagValues()
    settings.define_flags(ConvertOptions, flag_values=flag_values)
    flag_values(["make_records", *args])
    return flag_values


def options_from(*args: str) -> ConvertOptions:
    return settings.config_from_flags(ConvertOptions, parse(*args))


@pytest.mark.parametrize(
    "args, message",
    [
        # A flag mistake: a user error, exit 2.
        (
            ["--output_dir={tmp}/o1", "--input={tmp}", "--val_fraction=1.5"],
            "--val_fraction=1.5 must be < 1",
        ),
        # An input mistake found by the library: a user error, exit 2.
        (
            ["--input={tmp}/nowhere", "--output_dir={tmp}/o2"],
            "--input '{tmp}/nowhere' does not exist",
        ),
    ],
)
def test_exit_codes_and_messages_without_traceback(tmp_path, args, message):
    result = run_command("records.make_records", *(a.format(tmp=tmp_path) for a in args))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert message.format(tmp=tmp_path) in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output_dir=x"], "--input is required"),
        (["--input=x"], "--output_dir is required"),
        (["--input=x", "--output_dir=y", "--jpeg_quality=0"], "--jpeg_quality=0 must be >= 1"),
        (["--input=x", "--output_dir=y", "--max_short_side=0"], "--max_short_side=0 must be >= 1"),
        (["--input=x", "--output_dir=y", "--train_shards=-1"], "--train_shards=-1 must be >= 1"),
        (
            ["--input=x", "--output_dir=y", "--val_fraction=-0.1"],
            "--val_fraction=-0.1 must be >= 0",
        ),
        (["--input=x", "--output_dir=y", "--num_workers=0"], "--num_workers=0 must be >= 1"),
        (
            ["--input=x", "--output_dir=y", "--single_process", "--num_workers=3"],
            "--single_process conflicts with --num_workers",
        ),
        # Both flags named: either may be the one to lower.
        (
            ["--input=x", "--output_dir=y", "--val_fraction=0.5", "--test_fraction=0.5"],
            r"--val_fraction=0.5 \+ --test_fraction=0.5 = 1 leaves nothing for train",
        ),
        (
            ["--input=x", "--output_dir=y", "--test_shards=2"],
            "--test_shards=2 needs --test_fraction > 0",
        ),
    ],
)
def test_bad_flag_values_are_usage_errors(args, message):
    with pytest.raises(app.UsageError, match=message):
        options_from(*args)


def test_flags_map_to_options():
    options = options_from(
        *(
            "--input=a",
            "--input=b.zip",
            "--output_dir=o",
            "--max_short_side=160",
            "--single_process",
        )
    )
    assert options.inputs == ("a", "b.zip") and options.output_dir == "o"
    assert options.max_short_side == 160 and options.num_workers == 1
    assert options.val_fraction == 0.2 and options.jpeg_quality == 90 and not options.overwrite
    assert options_from("--input=a", "--output_dir=o").num_workers == (os.cpu_count() or 1)


def test_empty_input_is_a_user_error_with_a_message(tmp_path):
    # Raised to core.settings.run, which prints it once and exits 2 (see above).
    (tmp_path / "empty").mkdir()
    options = options_from(*(f"--input={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}"))
    with pytest.raises(sources.InputError, match="holds no files; nothing to convert"):
        make_records.convert_and_report(options)


@pytest.mark.slow
def test_convert_and_verify_exit_zero(tmp_path, caplog):
    # Set on absl's logger: parsing absl flags earlier in the session (other tests) sets
    # its level from --verbosity, which caplog's root-level setting does not override.
    caplog.set_level(logging.INFO, logger="absl")
    write_kaggle_folder(tmp_path / "train", 3)
    options = options_from(
        *(
            f"--input={tmp_path / 'train'}",
            f"--output_dir={tmp_path / 'out'}",
            "--single_process",
            "--verify",
        )
    )
    assert make_records.convert_and_report(options) == 0
    assert "6 inputs -> 6 written" in caplog.text and "checks out" in caplog.text
    assert "test" not in caplog.text.split("6 written", 1)[1].split(")", 1)[0]


@pytest.mark.slow
def test_the_summary_counts_the_test_split(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")
    write_kaggle_folder(tmp_path / "train", 10)
    args = [
        f"--input={tmp_path / 'train'}",
        f"--output_dir={tmp_path / 'out'}",
        "--val_fraction=0.25",
        "--test_fraction=0.25",
        "--single_process",
        "--verify",
    ]
    assert make_records.convert_and_report(options_from(*args)) == 0
    splits = json.loads((tmp_path / "out" / schema.MANIFEST_NAME).read_text())["splits"]
    counts = {split: info["num_examples"] for split, info in splits.items()}
    assert counts["test"] > 0 and sum(counts.values()) == 20
    summary = f"20 inputs -> 20 written (train {counts['train']}, val {counts['val']}, test {counts['test']})"
    assert summary in caplog.text and "checks out" in caplog.text
    # Found done on a rerun: the counts read back from the file, in the same order.
    caplog.clear()
    assert make_records.convert_and_report(options_from(*args)) == 0
    assert "nothing to do" in caplog.text and summary in caplog.text


def _shard_state(out: pathlib.Path) -> tuple[list[str], bool]:
    names = os.listdir(out) if out.is_dir() else []
    return [n for n in names if schema.parse_shard_name(n)], schema.MANIFEST_NAME in names


@pytest.mark.slow
def test_killed_conversion_resumes_to_the_same_result(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 120, height=64, width=96)
    out = tmp_path / "out"
    # A test split too: its shards are resumed like the others.
    num_shards = {"train": 24, "val": 6, "test": 3}
    args = [
        f"--input={folder}",
        f"--output_dir={out}",
        "--test_fraction=0.1",
        f"--train_shards={num_shards['train']}",
        f"--val_shards={num_shards['val']}",
        f"--test_shards={num_shards['test']}",
        "--max_short_side=48",
        "--num_workers=2",
    ]
    killed = run_make_records_killed_after(5, *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finals, has_manifest = _shard_state(out)
    assert len(finals) == 5 and not has_manifest
    # The resume must reuse these as they are.
    left_bytes = {name: (out / name).read_bytes() for name in finals}

    # The interrupted conversion is not silently mixed with other settings.
    with pytest.raises(writer.OutputDirError, match="max_short_side: 48 there, 64 now"):
        writer.convert(
            writer.ConvertOptions(
                inputs=(str(folder),),
                output_dir=str(out),
                test_fraction=0.1,
                train_shards=24,
                val_shards=6,
                test_shards=3,
                max_short_side=64,
                progress=False,
            )
        )
    # Rerunning the same command finishes the job.
    # In a process of its own, as the killed one was: its --num_workers=2 pool.
    rerun = run_make_records(*args, "--verify")
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output
    assert "resuming:" in output and "checks out" in output, output
    manifest = json.loads((out / schema.MANIFEST_NAME).read_text())
    assert manifest["run"]["shards_reused"] == 5
    assert len(manifest["splits"]["test"]["shards"]) == 3
    assert manifest["splits"]["test"]["num_examples"] > 0
    # Only the images of the shards the kill left unwritten are converted again.
    written_before = sum(
        shard["num_examples"]
        for split in manifest["splits"].values()
        for shard in split["shards"]
        if shard["file"] in finals
    )
    assert written_before > 0
    assert manifest["run"]["images_processed"] == 240 - written_before
    assert all((out / name).read_bytes() == data for name, data in left_bytes.items())

    # An uninterrupted run of the same conversion: equal bytes and manifest.
    reference = tmp_path / "reference"
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(folder),),
            output_dir=str(reference),
            test_fraction=0.1,
            train_shards=num_shards["train"],
            val_shards=num_shards["val"],
            test_shards=num_shards["test"],
            max_short_side=48,
            progress=False,
        )
    )
    expected = json.loads((reference / schema.MANIFEST_NAME).read_text())
    manifest.pop("run")
    expected.pop("run")
    assert manifest == expected
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))  # no temp files left
    for name in os.listdir(reference):
        if schema.parse_shard_name(name):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
