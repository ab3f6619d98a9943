"""Tests for trainer/models/files.py: the one resolver of a model's records settings."""

from __future__ import annotations

import json

import pytest

from conftest import make_jpeg_bytes
from records import writer
from records.photo import StoreSettings
from trainer.models import files as model_files


def _records(tmp_path, name, **options):
    folder = tmp_path / "photos"
    if not folder.exists():
        for label in ("cat", "dog"):
            (folder / label).mkdir(parents=True)
            for i in range(3):
                seed = i + (10 if label == "dog" else 0)
                (folder / label / f"{i}.jpg").write_bytes(make_jpeg_bytes(90, 120, seed=seed))
    records_dir = tmp_path / name
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(folder),),
            output_dir=str(records_dir),
            single_process=True,
            progress=False,
            **options,
        )
    )
    return records_dir


def _metrics(model_path, **content):
    model_path.parent.mkdir(parents=True, exist_ok=True)
    (model_path.parent / model_files.METRICS_NAME).write_text(json.dumps(content))


@pytest.mark.slow
def test_settings_come_from_the_training_records(tmp_path):
    records_dir = _records(tmp_path, "records", max_short_side=64, jpeg_quality=80)
    model_path = tmp_path / "model" / model_files.MODEL_NAME
    # Nothing says how the records stored photos: an error naming the fix, not a guess.
    with pytest.raises(FileNotFoundError, match="no metrics.json beside .* --records_dir="):
        model_files.trained_on(str(model_path))
    # --records_dir alone: its manifest.
    given = model_files.trained_on(str(model_path), str(records_dir))
    assert given.store == StoreSettings(64, 80) and given.source.endswith("manifest.json")
    # The records_dir that train named in metrics.json.
    _metrics(model_path, settings={"records_dir": str(records_dir)})
    named = model_files.trained_on(str(model_path))
    assert named.store == StoreSettings(64, 80) and named.manifest is not None
    # The records moved away and metrics.json has no settings of its own: a clear error.
    _metrics(model_path, settings={"records_dir": str(tmp_path / "gone")})
    with pytest.raises(FileNotFoundError, match="pass --records_dir"):
        model_files.trained_on(str(model_path))
    # train writes the settings themselves: the records need not exist.
    _metrics(
        model_path,
        settings={"records_dir": str(tmp_path / "gone")},
        records_settings={"max_short_side": 64, "jpeg_quality": 80},
    )
    stored = model_files.trained_on(str(model_path))
    assert stored.store == StoreSettings(64, 80) and stored.manifest is None
    assert stored.source.endswith(model_files.METRICS_NAME)
    # The same records given: agree. Other records: a contradiction, named with the fix.
    assert model_files.trained_on(str(model_path), str(records_dir)).manifest is not None
    other = _records(tmp_path, "other")
    with pytest.raises(ValueError, match=r"max_short_side=None.*max_short_side=64.*pass the"):
        model_files.trained_on(str(model_path), str(other))


def test_unreadable_metrics_names_the_file(tmp_path):
    model_path = tmp_path / "model" / model_files.MODEL_NAME
    model_path.parent.mkdir()
    (model_path.parent / model_files.METRICS_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=r"metrics.json is not valid JSON .*--records_dir"):
        model_files.trained_on(str(model_path))


def test_evaluate_refuses_records_that_store_photos_otherwise(tmp_path):
    from trainer.inference import evaluation

    records_dir = _records(tmp_path, "records", max_short_side=64)
    model_path = tmp_path / "model" / model_files.MODEL_NAME
    _metrics(model_path, records_settings={"max_short_side": 160, "jpeg_quality": 90})
    # Before the model is even loaded (there is none here): the records are the fault.
    with pytest.raises(ValueError, match=r"max_short_side=64.*max_short_side=160"):
        evaluation.evaluate(str(model_path), str(records_dir))
