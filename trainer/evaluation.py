"""Evaluation of a saved model on a split of a records directory (the `evaluate` library).

Metrics: accuracy, loss, Kaggle log loss, ROC AUC and the confusion matrix.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.stats
from absl import logging

from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer import model as model_lib

# Kaggle's log loss clips predictions to [eps, 1 - eps] so one confident mistake is finite.
_LOG_LOSS_EPS = 1e-15


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic over n_pos * n_neg (ties count half);
    None with one class."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = np.asarray(scores)[labels], np.asarray(scores)[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    u_statistic = scipy.stats.mannwhitneyu(positives, negatives).statistic
    return float(u_statistic / (len(positives) * len(negatives)))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Metrics of [N, 2] softmax or [N, 1] sigmoid outputs against int labels (dog = 1)."""
    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    prob_dog = model_lib.prob_dog(probabilities)
    if probabilities.shape[-1] == 2:
        predicted = probabilities.argmax(axis=-1)
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    else:
        predicted = (prob_dog > 0.5).astype(np.int64)
        loss = keras.losses.BinaryCrossentropy()(labels[:, None].astype(np.float32), probabilities)
    clipped = np.clip(prob_dog, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
    log_loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return {
        "num_examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(loss),
        "log_loss": float(log_loss),
        "roc_auc": roc_auc(labels, prob_dog),
        # Rows are the true class, columns the predicted class, in CLASS_NAMES order.
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(model_path: str, records_dir: str, split: str = "val", batch_size: int = 64) -> dict:
    """Runs the model over every example of `split` once and computes its metrics.

    Raises:
      FileNotFoundError, ValueError: Missing model or records, unknown split.
    """
    manifest = Manifest.load(records_dir)
    manifest.split(split)  # A clear error for an unknown split, before loading the model.
    model = model_lib.load_model(model_path)
    image_size = tuple(model.input_shape[1:3])
    data = dataset_lib.eval_dataset(manifest, batch_size, split=split, image_size=image_size)
    all_labels, all_probabilities = [], []
    for images, labels in data:
        all_probabilities.append(np.asarray(model.predict_on_batch(images)))
        all_labels.append(labels.numpy())
    labels = np.concatenate(all_labels)
    metrics = classification_metrics(labels, np.concatenate(all_probabilities))
    expected = manifest.num_examples(split)
    if metrics["num_examples"] != expected:
        logging.warning(
            "evaluated %d examples but the manifest lists %d for %s",
            metrics["num_examples"],
            expected,
            split,
        )
    metrics.update(
        model=model_path,
        records_dir=records_dir,
        split=split,
        class_names=list(manifest.class_names),
    )
    return metrics


def format_report(metrics: dict) -> str:
    """The human-readable text version of `evaluate`'s metrics."""
    names = metrics.get("class_names", ["cat", "dog"])
    auc = metrics["roc_auc"]
    lines = [
        f"model:     {metrics.get('model')}",
        f"split:     {metrics.get('split')} ({metrics['num_examples']} examples)",
        f"accuracy:  {metrics['accuracy']:.4f}",
        f"loss:      {metrics['loss']:.4f}",
        f"log loss:  {metrics['log_loss']:.4f}",
        f"ROC AUC:   {'n/a (one class)' if auc is None else f'{auc:.4f}'}",
        "confusion matrix (rows = true, columns = predicted):",
        f"{'':>10}" + "".join(f"{n:>10}" for n in names),
    ]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"{name:>10}" + "".join(f"{v:>10d}" for v in row))
    return "\n".join(lines) + "\n"
