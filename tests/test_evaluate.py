"""Tests for trainer/evaluate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer import evaluation as evaluate_lib
from trainer import model as model_lib


@pytest.fixture
def saved_model(tmp_path):
    keras.utils.set_random_seed(2)
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8)
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def test_matches_keras_evaluate(saved_model, tiny_records):
    metrics = evaluate_lib.evaluate(str(saved_model), str(tiny_records), "val", batch_size=5)
    model = model_lib.load_model(str(saved_model))
    data = dataset_lib.eval_dataset(
        Manifest.load(str(tiny_records)), 5, split="val", image_size=(32, 32)
    )
    keras_loss, keras_accuracy = model.evaluate(data, verbose=0)
    assert metrics["num_examples"] == 12
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-4)
    assert np.sum(metrics["confusion_matrix"]) == 12


def test_metric_functions():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    metrics = evaluate_lib.classification_metrics(labels, probabilities)
    assert metrics["accuracy"] == 0.75
    assert metrics["confusion_matrix"] == [[1, 1], [0, 2]]
    # Positives score 0.65, 0.8; negatives 0.1, 0.6: every positive outranks every negative.
    assert metrics["roc_auc"] == 1.0
    expected_log_loss = -np.mean(np.log([0.9, 0.4, 0.65, 0.8]))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss)
    assert evaluate_lib.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == 0.875
    assert evaluate_lib.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_cli_writes_json_and_text(saved_model, tiny_records, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.evaluate",
            f"--model={saved_model}",
            f"--records_dir={tiny_records}",
            "--output_prefix=" + str(tmp_path / "out" / "eval"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert metrics["num_examples"] == 12
    assert "confusion matrix" in (tmp_path / "out" / "eval.txt").read_text()
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.evaluate",
            f"--model={tmp_path / 'nope.keras'}",
            f"--records_dir={tiny_records}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
