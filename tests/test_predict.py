"""Tests for trainer/predict.py: a Kaggle submission from a folder or zip."""

from __future__ import annotations

import csv
import json
import zipfile

import keras
import pytest
import tensorflow as tf
from conftest import make_jpeg_bytes

from pipeline import decode
from trainer import model as model_lib
from trainer import prediction as predict_lib


@pytest.fixture
def saved_model(tmp_path):
    keras.utils.set_random_seed(4)
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8)
    )
    path = tmp_path / "model.keras"
    model.save(path)
    return path, model


def _test_folder(folder):
    folder.mkdir()
    images = {}
    for image_id in (1, 2, 10, 11):
        images[image_id] = make_jpeg_bytes(40, 56, seed=image_id)
        (folder / f"{image_id}.jpg").write_bytes(images[image_id])
    png = tf.io.encode_png(tf.zeros([20, 30, 3], tf.uint8) + 90).numpy()
    (folder / "3.png").write_bytes(png)
    images[3] = png
    (folder / "4.jpg").write_bytes(b"this is not an image")
    return images


def _read_submission(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"]
    return [(row[0], float(row[1])) for row in rows[1:]]


@pytest.mark.parametrize("as_zip", [False, True])
def test_writes_valid_submission_and_reports_bad_images(saved_model, tmp_path, as_zip):
    model_path, model = saved_model
    images = _test_folder(tmp_path / "test1")
    source = tmp_path / "test1"
    if as_zip:
        source = tmp_path / "test1.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for path in sorted((tmp_path / "test1").iterdir()):
                archive.write(path, f"test1/{path.name}")
    output = tmp_path / "submission.csv"
    summary = predict_lib.predict(str(model_path), str(source), str(output), batch_size=4)

    rows = _read_submission(output)
    assert [image_id for image_id, _ in rows] == ["1", "2", "3", "4", "10", "11"]
    assert summary == {**summary, "images": 6, "predicted": 5, "bad_images": 1}
    labels = dict(rows)
    assert labels["4"] == 0.5
    bad = json.loads((tmp_path / "submission.bad_images.json").read_text())
    assert [entry["id"] for entry in bad] == ["4"] and "decode" in bad[0]["reason"]
    assert "function_node" not in bad[0]["reason"] and "[Op:" not in bad[0]["reason"]
    for image_id, encoded in images.items():
        image = decode.decode_image_any(tf.constant(encoded), (32, 32))
        expected = model.predict_on_batch(image[None])[0, 1]
        assert labels[str(image_id)] == pytest.approx(float(expected), abs=1e-5)


def test_empty_or_missing_input_is_a_clear_error(saved_model, tmp_path):
    model_path, _ = saved_model
    with pytest.raises(FileNotFoundError, match="no such folder or zip"):
        predict_lib.predict(str(model_path), str(tmp_path / "nope"), str(tmp_path / "s.csv"))


def test_submission_id():
    assert predict_lib.submission_id("test1/17.jpg") == "17"
    assert sorted(["10", "9", "x"], key=predict_lib._sort_key) == ["9", "10", "x"]
