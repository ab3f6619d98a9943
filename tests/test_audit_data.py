"""Tests for trainer/audit_data.py, the ``audit_data`` command: its flags, its errors, its
printed summary, the reuse of its feature cache and its alias ``audit_labels``. The
library it runs is tested in test_labels.py and test_analysis.py.
"""

from __future__ import annotations

import configparser
import dataclasses

import pytest
from test_labels import FLIPPED, read_csv, write_flipped_records

from conftest import REPO_ROOT
from trainer import audit_data
from trainer.audit import features as audit_features
from trainer.audit import report


def test_command_reuses_the_feature_cache(tmp_path, capsys, monkeypatch):
    config = audit_data.AuditConfig(
        records_dir=str(write_flipped_records(tmp_path)),
        output_dir=str(tmp_path / "audit"),
        backbone="small_cnn",
        weights="none",
        image_size=32,
        folds=3,
        num_show=2,
    )
    assert audit_data.main(config) == 0
    out = capsys.readouterr().out
    assert "80 images audited: 0 show neither class" in out and "3 likely mislabelled" in out
    assert "data_issues.csv" in out and "index.html" in out
    assert "has no ImageNet classifier" in out
    assert "cat.\\xff.flipped.jpg" in out
    first = read_csv(tmp_path / "audit" / report.CSV_NAME)

    def no_extraction(*args, **kwargs):
        raise AssertionError("the base ran again although its features were cached")

    monkeypatch.setattr(audit_features, "extract", no_extraction)
    assert audit_data.main(dataclasses.replace(config, folds=4)) == 0
    second = read_csv(tmp_path / "audit" / report.CSV_NAME)
    assert {r["fold"] for r in first} == {"0", "1", "2"}
    assert {r["fold"] for r in second} == {"0", "1", "2", "3"}
    assert {r["filename"] for r in second if int(r["label_rank"]) <= 3} == FLIPPED


def test_flags_are_checked():
    with pytest.raises(ValueError, match="folds=1 must be >= 2"):
        audit_data.AuditConfig(records_dir="r", folds=1)
    with pytest.raises(ValueError, match="backbone='nope': expected one of"):
        audit_data.AuditConfig(records_dir="r", backbone="nope")


def test_the_command_names_the_problem(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "best.keras").write_bytes(b"")
    config = audit_data.AuditConfig(records_dir=str(model), output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="is a model folder"):
        audit_data.main(config)


def test_duplicate_similarity_is_checked():
    with pytest.raises(ValueError, match="duplicate_similarity=1.5 must be <= 1"):
        audit_data.AuditConfig(records_dir="r", duplicate_similarity=1.5)


def test_audit_labels_is_kept_as_an_alias():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    scripts = dict(
        line.split(" = ")
        for line in config["options.entry_points"]["console_scripts"].splitlines()
        if " = " in line
    )
    assert scripts["audit_labels"] == scripts["audit_data"] == "trainer.audit_data:run"
