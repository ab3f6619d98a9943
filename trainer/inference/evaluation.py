"""Evaluation of a saved model on a split of a records directory (the `evaluate` library).

Metrics: accuracy, loss, Kaggle log loss, ROC AUC and the confusion matrix; and the
split's most confident mistakes (the top N by per-example log loss), with their images
as the model saw them and the file names they came from.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time

import keras
import numpy as np
import scipy.stats
from absl import logging

from pipeline import dataset as dataset_lib
from records.inputs import sources
from records.manifest import Manifest
from records.schema import CLASS_NAMES
from trainer.inference import decision
from trainer.inference import tta as tta_lib
from trainer.models import engine as engine_lib
from trainer.models import files as model_files
from trainer.models import model as model_lib

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


def example_log_loss(labels: np.ndarray, prob_dog: np.ndarray) -> np.ndarray:
    """Each example's log loss, -log P(true class), clipped like Kaggle's."""
    labels = np.asarray(labels).astype(np.int64)
    clipped = np.clip(np.asarray(prob_dog, dtype=np.float64), _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
    return -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))


def select_mistakes(
    labels: np.ndarray, prob_dog: np.ndarray, num: int, positions: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the ``num`` most confident mistakes, highest loss first.

    A mistake is an example whose predicted class (``trainer.inference.decision``) is not its
    label; they are ranked by ``example_log_loss``, ties by ``positions`` (default: the
    index), so the choice does not depend on batching.

    Args:
      labels: int labels [N] (dog = 1).
      prob_dog: P(dog) [N].
      num: How many at most (fewer when there are fewer mistakes).
      positions: Each example's place in the split [N], for the tie order.

    Returns:
      int indices into the arrays, at most ``num``.
    """
    labels = np.asarray(labels).astype(np.int64)
    prob_dog = np.asarray(prob_dog)
    positions = np.arange(len(labels)) if positions is None else np.asarray(positions)
    wrong = np.flatnonzero(decision.class_id(prob_dog) != labels)
    losses = example_log_loss(labels[wrong], prob_dog[wrong])
    # lexsort sorts by its last key first: loss descending, then position ascending.
    order = np.lexsort((positions[wrong], -losses))
    return wrong[order[: max(num, 0)]]


@dataclasses.dataclass
class Mistakes:
    """The most confident mistakes of a split, highest loss first.

    Attributes:
      images: uint8 [n, H, W, 3], as the model saw them (the eval decode, unflipped).
      labels: int [n] true labels.
      prob_dog: float [n] P(dog) (after test-time augmentation, if any).
      filenames: The source names stored in the records (escaped when not UTF-8).
      positions: Each one's place in the split's fixed eval order.
    """

    images: np.ndarray
    labels: np.ndarray
    prob_dog: np.ndarray
    filenames: list[str]
    positions: np.ndarray

    @property
    def losses(self) -> np.ndarray:
        return example_log_loss(self.labels, self.prob_dog)

    @classmethod
    def empty(cls, image_shape: tuple[int, ...]) -> Mistakes:
        return cls(
            np.zeros((0, *image_shape), np.uint8),
            np.zeros(0, np.int64),
            np.zeros(0),
            [],
            np.zeros(0, np.int64),
        )

    def merge(self, other: Mistakes, num: int) -> Mistakes:
        """The top ``num`` mistakes of both (keeps memory at ``num`` images)."""
        labels = np.concatenate([self.labels, other.labels])
        prob_dog = np.concatenate([self.prob_dog, other.prob_dog])
        positions = np.concatenate([self.positions, other.positions])
        keep = select_mistakes(labels, prob_dog, num, positions)
        filenames = self.filenames + other.filenames
        return Mistakes(
            np.concatenate([self.images, other.images])[keep],
            labels[keep],
            prob_dog[keep],
            [filenames[i] for i in keep],
            positions[keep],
        )

    def as_list(self, class_names) -> list[dict]:
        """JSON-ready rows: file name, true label, P(dog), loss."""
        return [
            {
                "filename": name,
                "true_label": class_names[label],
                "prob_dog": float(p),
                "log_loss": float(loss),
            }
            for name, label, p, loss in zip(self.filenames, self.labels, self.prob_dog, self.losses)
        ]


def display_filename(raw: bytes) -> str:
    """``image/filename`` bytes -> the name as the manifest and logs show it (escaped
    ``\\xff`` where it is not UTF-8)."""
    return sources.display_name(raw.decode("utf-8", "surrogateescape"))


@dataclasses.dataclass
class Evaluation:
    """What ``evaluate`` returns.

    Attributes:
      metrics: JSON-ready metrics.
      mistakes: The top mistakes, with their images.
      filenames: Every example's source name, in the split's eval order.
      labels: Every example's label.
      prob_dog: Every example's P(dog) (after test-time augmentation, if any).
    """

    metrics: dict
    mistakes: Mistakes
    filenames: list[str] = dataclasses.field(default_factory=list)
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    prob_dog: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def write_predictions(self, path: str) -> None:
        """One CSV row per example: filename, label, P(dog), predicted class."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label", "prob_dog", "predicted"])
            for name, label, p in zip(self.filenames, self.labels, self.prob_dog):
                writer.writerow([name, CLASS_NAMES[label], f"{p:.6f}", decision.class_name(p)])


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Metrics of [N, 2] softmax or [N, 1] sigmoid outputs against int labels (dog = 1)."""
    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    prob_dog = model_lib.prob_dog(probabilities)
    predicted = decision.class_id(prob_dog)
    if probabilities.shape[-1] == 2:
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    else:
        loss = keras.losses.BinaryCrossentropy()(labels[:, None].astype(np.float32), probabilities)
    clipped = np.clip(prob_dog, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
    log_loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    accuracy = float(np.mean(predicted == labels))
    return {
        "num_examples": int(len(labels)),
        "accuracy": accuracy,
        # The binomial standard error of the accuracy, sqrt(p (1 - p) / n): on 1,200 photos
        # one mistake is 0.08 point, and a difference smaller than this is not a result.
        "accuracy_stderr": accuracy_stderr(accuracy, len(labels)),
        "loss": float(loss),
        "log_loss": float(log_loss),
        "roc_auc": roc_auc(labels, prob_dog),
        # Rows are the true class, columns the predicted class, in CLASS_NAMES order.
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(
    model_path: str,
    records_dir: str,
    split: str = "val",
    batch_size: int = 64,
    tta: str = "none",
    num_mistakes: int = 16,
    engine: str = "auto",
) -> Evaluation:
    """Runs the model over every example of `split` once; its metrics and top mistakes.

    Args:
      model_path: A ``.keras`` model saved by ``train``.
      records_dir: Directory made by ``make_records``.
      split: Which split.
      batch_size: Images per model call.
      tta: Test-time augmentation, one of ``trainer.inference.tta.TTA_MODES``.
      num_mistakes: How many of the most confident mistakes to keep (with images).
      engine: What runs the model, one of ``trainer.models.engine.ENGINES``.

    Raises:
      FileNotFoundError, ValueError: Missing model or records, unknown split or tta, or
        records that store photos otherwise than the model's training records.
    """
    tta_lib.check_mode(tta)  # Before the slow model load.
    engine_lib.check_engine(engine)
    manifest = Manifest.load(records_dir)
    manifest.split(split)  # A clear error for an unknown split, before loading the model.
    # Records that store photos otherwise than the training records did would show the
    # model other pixels than it was trained and validated on.
    model_files.check_records(model_path, manifest)
    model = model_lib.load_model(model_path)
    image_size = model_lib.input_size(model)
    data = dataset_lib.eval_dataset(
        manifest, batch_size, split=split, image_size=image_size, with_filenames=True
    )
    all_labels, all_probabilities, all_filenames = [], [], []
    mistakes = Mistakes.empty((*image_size, 3))
    seen = 0
    start = time.perf_counter()
    runner = engine_lib.runner(
        model,
        engine,
        manifest.num_examples(split) * tta_lib.passes(tta),
        os.path.dirname(os.path.abspath(model_path)),
    )
    for images, labels, filenames in data:
        probabilities = tta_lib.predict_batch(runner, images, tta)
        labels = labels.numpy()
        names = [display_filename(raw) for raw in filenames.numpy()]
        all_probabilities.append(probabilities)
        all_labels.append(labels)
        all_filenames.extend(names)
        # Keep only the running top N (with their images): memory stays at N images
        # however large the split is.
        mistakes = mistakes.merge(
            Mistakes(
                images.numpy(),
                labels,
                model_lib.prob_dog(probabilities),
                names,
                seen + np.arange(len(labels)),
            ),
            num_mistakes,
        )
        seen += len(labels)
    seconds = time.perf_counter() - start
    labels = np.concatenate(all_labels)
    probabilities = np.concatenate(all_probabilities)
    metrics = classification_metrics(labels, probabilities)
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
        tta=tta,
        engine=runner.engine,
        # Reading, decoding, the model passes and a conversion (not loading the model).
        seconds=seconds,
        top_mistakes=mistakes.as_list(manifest.class_names),
    )
    logging.info(
        "evaluated %d examples of %s with tta=%s in %.1f s", len(labels), split, tta, seconds
    )
    return Evaluation(metrics, mistakes, all_filenames, labels, model_lib.prob_dog(probabilities))


def accuracy_stderr(accuracy: float, num_examples: int) -> float:
    """sqrt(p (1 - p) / n), the standard error of an accuracy measured on n examples."""
    return math.sqrt(accuracy * (1 - accuracy) / num_examples) if num_examples else float("nan")


def format_report(metrics: dict) -> str:
    """The human-readable text version of `evaluate`'s metrics."""
    names = metrics.get("class_names", ["cat", "dog"])
    auc = metrics["roc_auc"]
    lines = [
        f"model:     {metrics.get('model')}",
        f"split:     {metrics.get('split')} ({metrics['num_examples']} examples)",
        f"tta:       {metrics.get('tta', 'none')}",
        f"accuracy:  {metrics['accuracy']:.4f} +- {metrics['accuracy_stderr']:.4f} (standard error)",
        f"loss:      {metrics['loss']:.4f}",
        f"log loss:  {metrics['log_loss']:.4f}",
        f"ROC AUC:   {'n/a (one class)' if auc is None else f'{auc:.4f}'}",
        "confusion matrix (rows = true, columns = predicted):",
        f"{'':>10}" + "".join(f"{n:>10}" for n in names),
    ]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"{name:>10}" + "".join(f"{v:>10d}" for v in row))
    mistakes = metrics.get("top_mistakes") or []
    if mistakes:
        lines.append(f"most confident mistakes ({len(mistakes)}, highest loss first):")
        lines.extend(
            f"  {m['filename']}  true {m['true_label']}  P(dog) {m['prob_dog']:.3f}"
            for m in mistakes
        )
    return "\n".join(lines) + "\n"
