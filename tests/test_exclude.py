"""Tests for ``make_records --exclude`` (records/exclude.py and its use in the plan): a plain
list or the audit's CSV names images to leave out; they are skipped with their reason and
counted, no other image moves between splits, the digest names the selection (so resume
and rerun keep the accounting, a different selection is a different conversion), names
that match nothing are warned about and counted, and a bad file is a flag error."""

from __future__ import annotations

import csv
import json
import logging
import signal

import pytest
from absl import app, flags

from conftest import (
    convert,
    placed_splits,
    read_records,
    run_make_records,
    run_make_records_killed_after,
    write_kaggle_folder,
)
from core import settings
from records import exclude, plan, schema, writer
from records.convert_options import ConvertOptions

# The audit's data_issues.csv columns (the contract: filename and flagged are what
# make_records reads; the others are there to be ignored).
AUDIT_COLUMNS = ["filename", "split", "given_label", "p_given_label", "duplicate_of", "flagged"]


class _NoProgress:
    def update(self, *args) -> None:
        pass

    def close(self) -> None:
        pass


def _options(folder, **kwargs) -> ConvertOptions:
    return ConvertOptions(
        inputs=(str(folder),),
        output_dir="unused",
        single_process=True,
        **{"val_fraction": 0.5, **kwargs},
    )


def _plan(folder, **kwargs) -> plan.Plan:
    return plan.make_plan(_options(folder, **kwargs), map, lambda what, total: _NoProgress())


def _excluded(the_plan: plan.Plan) -> list[str]:
    return sorted(e["source"] for e in the_plan.skipped if e["reason"] == "excluded by audit")


def _write_list(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _write_audit_csv(path, rows: dict[str, str]) -> str:
    """``data_issues.csv`` with one row per name: ``{filename: flagged}``."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(AUDIT_COLUMNS)
        for name, flagged in rows.items():
            label = name.split("/")[-1].split(".")[0]
            duplicate_of = "train/cat.0.jpg" if "duplicate" in flagged else ""
            out.writerow([name, "train", label, "0.1", duplicate_of, flagged])
    return str(path)


def _options_from_flags(*args: str) -> ConvertOptions:
    flag_values = flags.FlagValues()
    settings.define_flags(ConvertOptions, flag_values=flag_values)
    flag_values(["make_records", *args])
    return settings.config_from_flags(ConvertOptions, flag_values)


@pytest.fixture
def folder(tmp_path):
    """``train/`` with 8 cats and 8 dogs, all different."""
    write_kaggle_folder(tmp_path / "train", num_per_class=8)
    return tmp_path / "train"


def test_a_plain_list_leaves_out_exactly_its_names_and_moves_no_other_image(folder, tmp_path):
    names = ["train/cat.1.jpg", "train/dog.3.jpg", "train/dog.7.jpg"]
    listed = _write_list(tmp_path / "bad.txt", ["# from the audit", "", *names, "  ", names[0]])
    base, excluding = _plan(folder), _plan(folder, exclude=listed)

    assert _excluded(excluding) == names
    placed = placed_splits(excluding)
    # Every other image is written, in the split it had without the exclusion.
    assert placed == {
        name: split for name, split in placed_splits(base).items() if name not in names
    }
    # Every input is in exactly one place: written or skipped.
    assert len(placed) + len(excluding.skipped) == excluding.inputs_found == 16
    assert excluding.settings["exclude"] == {
        "file": listed,
        "kind": "list",
        "issues": None,
        "names": 3,
        "names_sha256": excluding.settings["exclude"]["names_sha256"],
        "excluded": 3,
        "unmatched": 0,
        "unmatched_examples": [],
    }
    # Without --exclude the settings (and so the digest) are what they always were.
    assert "exclude" not in base.settings


def test_the_csv_rows_to_leave_out_are_chosen_by_issue_type(folder, tmp_path):
    rows = {
        "train/cat.0.jpg": "",
        "train/cat.1.jpg": "label",
        "train/cat.2.jpg": "duplicate;label",
        "train/dog.0.jpg": "duplicate",
        "train/dog.1.jpg": "neither",
        "train/dog.2.jpg": "",
    }
    issues_csv = _write_audit_csv(tmp_path / "data_issues.csv", rows)
    cases = {
        None: ["train/cat.1.jpg", "train/cat.2.jpg", "train/dog.0.jpg", "train/dog.1.jpg"],
        ("label",): ["train/cat.1.jpg", "train/cat.2.jpg"],
        ("duplicate",): ["train/cat.2.jpg", "train/dog.0.jpg"],
        ("neither", "label"): ["train/cat.1.jpg", "train/cat.2.jpg", "train/dog.1.jpg"],
    }
    for issues, expected in cases.items():
        the_plan = _plan(folder, exclude=issues_csv, exclude_issues=issues)
        assert _excluded(the_plan) == expected, issues
        assert the_plan.settings["exclude"]["kind"] == "csv"
        assert the_plan.settings["exclude"]["issues"] == list(issues or exclude.ISSUE_TYPES)


def test_the_flags_reach_the_options(folder, tmp_path):
    issues_csv = _write_audit_csv(tmp_path / "data_issues.csv", {"train/cat.1.jpg": "label"})
    options = _options_from_flags(
        f"--input={folder}", "--output_dir=o", f"--exclude={issues_csv}", "--exclude_issues=label"
    )
    assert options.exclude_issues == ("label",)
    assert options.exclusion.names == {"train/cat.1.jpg"}
    assert _options_from_flags(f"--input={folder}", "--output_dir=o").exclusion is None


def test_names_that_match_no_input_are_warned_about_and_counted(folder, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="absl")
    missing = [f"train/cat.{i}.jpg" for i in range(20, 27)]
    listed = _write_list(tmp_path / "bad.txt", ["train/cat.1.jpg", *missing])
    the_plan = _plan(folder, exclude=listed)

    assert _excluded(the_plan) == ["train/cat.1.jpg"]
    assert the_plan.settings["exclude"]["unmatched"] == 7
    assert the_plan.settings["exclude"]["unmatched_examples"] == sorted(missing)[:5]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "7 of its 8 names match no input" in warning
    assert "train/cat.20.jpg, train/cat.21.jpg" in warning and "..." in warning


def test_a_csv_made_for_another_folder_is_a_clear_warning_not_an_error(folder, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="absl")
    rows = {f"test1/cat.{i}.jpg": "label" for i in range(3)}
    issues_csv = _write_audit_csv(tmp_path / "data_issues.csv", rows)
    the_plan = _plan(folder, exclude=issues_csv)

    assert _excluded(the_plan) == [] and len(placed_splits(the_plan)) == 16
    assert the_plan.settings["exclude"]["unmatched"] == 3
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "none of its 3 names matches an input, so nothing is excluded" in warning
    assert "its names start with test1/, this run's inputs' with train/" in warning
    assert "Was it made for other records?" in warning


def test_the_digest_follows_the_selection_not_the_row_order(folder, tmp_path):
    issues = {"train/cat.1.jpg": "label", "train/dog.2.jpg": "neither", "train/dog.3.jpg": ""}
    first = _plan(folder, exclude=_write_audit_csv(tmp_path / "data_issues.csv", issues))
    again = _plan(folder, exclude=str(tmp_path / "data_issues.csv"))
    assert again.digest == first.digest
    # The audit rerun: rows in another order, other scores, the same rows flagged.
    reranked = dict(reversed(list(issues.items())))
    _write_audit_csv(tmp_path / "data_issues.csv", reranked)
    assert _plan(folder, exclude=str(tmp_path / "data_issues.csv")).digest == first.digest
    # Another selection of the same file is another conversion.
    label_only = _plan(folder, exclude=str(tmp_path / "data_issues.csv"), exclude_issues=("label",))
    assert label_only.digest != first.digest
    assert _plan(folder).digest != first.digest


def test_accounting_rerun_and_a_changed_exclusion(folder, tmp_path):
    out = tmp_path / "out"
    names = ["train/cat.0.jpg", "train/cat.5.jpg", "train/dog.4.jpg"]
    listed = _write_list(tmp_path / "bad.txt", [*names, "train/cat.99.jpg"])
    result = convert([folder], out, exclude=listed, val_fraction=0.5)
    manifest = result.manifest
    accounting = manifest["accounting"]
    assert accounting["inputs_found"] == 16 and accounting["written"] == 13
    assert accounting["skipped"] == 3 and accounting["duplicates"] == 0
    assert manifest["skip_reasons"] == {"excluded by audit": 3}
    assert [(e["source"], e["reason"]) for e in manifest["skipped"]] == [
        (name, "excluded by audit") for name in names
    ]
    assert manifest["settings"]["exclude"]["unmatched"] == 1
    written = {r[schema.FILENAME].decode() for rows in read_records(out).values() for r in rows}
    assert len(written) == 13 and not written & set(names)

    # The same command again: nothing to do, the same accounting.
    again = convert([folder], out, exclude=listed, val_fraction=0.5)
    assert again.state == "done" and again.manifest["accounting"] == accounting
    # A different selection is a different conversion: refused, saying what differs.
    fewer = _write_list(tmp_path / "fewer.txt", names[:1])
    with pytest.raises(writer.OutputDirError, match=r"exclude: \{.*\} there, \{.*\} now"):
        convert([folder], out, exclude=fewer, val_fraction=0.5)
    with pytest.raises(writer.OutputDirError, match="exclude: .* there, None now"):
        convert([folder], out, val_fraction=0.5)
    replaced = convert([folder], out, exclude=fewer, val_fraction=0.5, overwrite=True)
    assert replaced.state == "fresh" and replaced.manifest["accounting"]["written"] == 15


@pytest.mark.parametrize(
    "content, extra_flags, message",
    [
        (None, [], "--exclude: cannot read {path}: No such file or directory"),
        (b"\xff\xfe name\n", [], "--exclude: cannot read {path}: not UTF-8 text"),
        (
            b"name,reason\ntrain/cat.1.jpg,blurry\n",
            [],
            "--exclude: {path} has no header with columns filename and flagged",
        ),
        (
            b"filename,flagged\ntrain/cat.1.jpg,1\n",
            [],
            "--exclude: {path} line 2: flagged holds '1'; expected issue types joined by ';' "
            "from neither, duplicate, label",
        ),
        (b"filename,flagged\ntrain/cat.1.jpg\n", [], "line 2: 1 fields, the header has 2"),
        (b"filename,flagged\n,label\n", [], "line 2: empty filename"),
        (
            b"train/cat.1.jpg\n",
            ["--exclude_issues=label"],
            "--exclude_issues chooses rows of the audit's CSV, but {path} is a plain list",
        ),
        (
            b"filename,flagged\n",
            ["--exclude_issues=labels"],
            "--exclude_issues='labels': expected one of neither, duplicate, label",
        ),
    ],
    ids=[
        "missing",
        "not text",
        "csv without the columns",
        "unknown issue type",
        "short row",
        "empty name",
        "issues with a list",
        "unknown issue flag",
    ],
)
def test_a_bad_exclude_file_is_a_flag_error(tmp_path, content, extra_flags, message):
    path = tmp_path / ("exclude.csv" if content and b"," in content else "exclude.txt")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(app.UsageError, match=message.format(path=path)):
        _options_from_flags(
            f"--input={tmp_path}", "--output_dir=o", f"--exclude={path}", *extra_flags
        )


def test_exclude_issues_needs_a_csv_exclude(tmp_path):
    with pytest.raises(app.UsageError, match="--exclude_issues needs --exclude="):
        _options_from_flags(f"--input={tmp_path}", "--output_dir=o", "--exclude_issues=label")
    with pytest.raises(app.UsageError, match="--exclude: cannot read .*: Is a directory"):
        _options_from_flags(f"--input={tmp_path}", "--output_dir=o", f"--exclude={tmp_path}")


@pytest.mark.slow
def test_a_killed_conversion_with_exclude_resumes_to_the_same_accounting(tmp_path):
    folder = tmp_path / "train"
    write_kaggle_folder(folder, 30, height=64, width=96)
    excluded = [f"train/{name}.{i}.jpg" for name in ("cat", "dog") for i in range(0, 30, 4)]
    listed = _write_list(tmp_path / "bad.txt", excluded)
    out = tmp_path / "out"
    args = [
        f"--input={folder}",
        f"--output_dir={out}",
        "--train_shards=8",
        "--val_shards=2",
        f"--exclude={listed}",
        "--num_workers=2",
    ]
    killed = run_make_records_killed_after(3, *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / schema.MANIFEST_NAME).exists()

    # The same command finishes the job: the finished shards reused, the same accounting
    # as an unbroken run.
    resumed = run_make_records(*args, "--verify")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming: 3 finished shard(s) reused" in resumed.stderr
    assert f"{len(excluded)} of the skipped were excluded by audit" in resumed.stderr
    manifest = json.loads((out / schema.MANIFEST_NAME).read_text())
    reference = tmp_path / "reference"
    convert([folder], reference, train_shards=8, val_shards=2, exclude=listed)
    expected = json.loads((reference / schema.MANIFEST_NAME).read_text())
    manifest.pop("run")
    expected.pop("run")
    assert manifest == expected
    assert manifest["accounting"]["skipped"] == len(excluded)
    assert manifest["accounting"]["written"] == 60 - len(excluded)


@pytest.mark.slow
def test_the_command_refuses_a_changed_exclusion_with_exit_2(folder, tmp_path):
    out = tmp_path / "out"
    listed = _write_list(tmp_path / "bad.txt", ["train/cat.1.jpg"])
    convert([folder], out, exclude=listed)
    other = _write_list(tmp_path / "other.txt", ["train/dog.1.jpg"])
    refused = run_make_records(f"--input={folder}", f"--output_dir={out}", f"--exclude={other}")
    # Exit 2 with the reason, not an abort: the refusal used to end the process while
    # TensorFlow traced the photo function on another thread (exit 134).
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "different settings (exclude: " in refused.stderr
    assert "pass --overwrite to replace it" in refused.stderr
    assert "Fatal Python error" not in refused.stderr
