r"""Evaluates a saved model on a split of a records directory.

  evaluate --model=build/model/model.keras --records_dir=build/records --split=val

Writes <output_prefix>.json and <output_prefix>.txt (default: next to the model,
eval_<split>.*): accuracy, loss, Kaggle log loss, ROC AUC and the confusion matrix.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

from records import cli

FLAGS = flags.FLAGS


# Kaggle's log loss clips predictions to [eps, 1 - eps] so one confident mistake is finite.
_LOG_LOSS_EPS = 1e-15


def load_model(model_path: str):
    """Loads a model saved by `train` (registers this project's custom layers first).

    Raises:
      FileNotFoundError: No such file.
      ValueError: The file is not a loadable Keras model.
    """
    import keras

    from trainer import model as model_lib  # noqa: F401  (registers VGG16Preprocess)

    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"--model={model_path}: no such file (train writes model.keras)")
    try:
        return keras.models.load_model(model_path)
    except (ValueError, OSError, TypeError) as e:
        raise ValueError(f"--model={model_path} is not a Keras model saved by train: {e}") from None


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact ROC AUC (Mann-Whitney U with tied scores counted half); None with one class."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties (1-based), as in the Mann-Whitney statistic.
    start = 0
    while start < len(sorted_scores):
        end = start
        while end + 1 < len(sorted_scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Metrics of [N, 2] softmax or [N, 1] sigmoid outputs against int labels (dog = 1)."""
    import keras

    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[-1] == 2:
        prob_dog = probabilities[:, 1]
        predicted = probabilities.argmax(axis=-1)
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    else:
        prob_dog = probabilities[:, 0]
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
    from pipeline import dataset as dataset_lib
    from records import schema

    manifest = schema.read_manifest(records_dir)
    schema.shard_paths(records_dir, split, manifest)  # Clear error for an unknown split.
    model = load_model(model_path)
    image_size = tuple(model.input_shape[1:3])
    data = dataset_lib.eval_dataset(records_dir, batch_size, split=split, image_size=image_size)
    all_labels, all_probabilities = [], []
    for images, labels in data:
        all_probabilities.append(np.asarray(model.predict_on_batch(images)))
        all_labels.append(labels.numpy())
    labels = np.concatenate(all_labels)
    metrics = classification_metrics(labels, np.concatenate(all_probabilities))
    expected = manifest["splits"][split]["num_examples"]
    if metrics["num_examples"] != expected:
        logging.warning(
            "evaluated %d examples but the manifest lists %d for %s",
            metrics["num_examples"],
            expected,
            split,
        )
    metrics.update(
        model=model_path, records_dir=records_dir, split=split, class_names=manifest["class_names"]
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


def _define_flags() -> None:
    """Defined on demand, not at import: evaluate and predict are also libraries, and
    absl refuses two modules defining the same flag name in one process."""
    flags.DEFINE_string("model", None, "A .keras model saved by train.")
    flags.DEFINE_string("records_dir", None, "Directory made by make_records.")
    flags.DEFINE_string("split", "val", "Which split to evaluate.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_string(
        "output_prefix", None, "Output path without extension (default: <model dir>/eval_<split>)."
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in ("model", "records_dir"):
        if not FLAGS[flag].value:
            raise app.UsageError(f"--{flag} is required")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size} must be >= 1")
    prefix = FLAGS.output_prefix or os.path.join(
        os.path.dirname(os.path.abspath(FLAGS.model)), f"eval_{FLAGS.split}"
    )
    logging.info("evaluating %s on %s/%s", FLAGS.model, FLAGS.records_dir, FLAGS.split)
    try:
        metrics = evaluate(FLAGS.model, FLAGS.records_dir, FLAGS.split, FLAGS.batch_size)
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    report = format_report(metrics)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(metrics, f, indent=2)
    with open(prefix + ".txt", "w") as f:
        f.write(report)
    print(report, end="")
    logging.info("wrote %s.json and %s.txt", prefix, prefix)
    return 0


def run() -> None:
    cli.run(main, __name__, _define_flags)


if __name__ == "__main__":
    run()
