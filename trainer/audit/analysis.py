"""The data audit: photos that show neither class, near-duplicates and label errors.

One pass of the pretrained base over every labelled record (``features.cached``), then
three cheap analyses of the same vectors, each ranking every image:

1. neither class (``neither``): the ImageNet head's mass on dogs and cats, and the
   distance to the nearest neighbours;
2. near-duplicates (``neighbours``): neighbours above a similarity measured on planted
   copies, grouped, one of each group kept (val first: no train/val leakage);
3. label errors (``labels``): out-of-fold P(given label), cleanlab's confident learning.

``analyse`` gathers them in a ``findings.Findings``; ``report`` writes it:
``data_issues.csv`` (one row per image, the input of ``make_records --exclude``),
``duplicates.csv``, a picture per issue type and ``index.html``. ``audit`` does all three
steps; the ``audit_data`` command (``trainer/audit_data.py``) runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from records.manifest import Manifest
from trainer.audit import features as audit_features
from trainer.audit import labels as labels_lib
from trainer.audit import neighbours as neighbours_lib
from trainer.audit import neither as neither_lib
from trainer.audit import report
from trainer.audit.findings import Findings
from trainer.models import backbones


def load_records(records_dir: str) -> Manifest:
    """The manifest of the records to audit, checked for what the audit needs.

    Raises:
      FileNotFoundError: No manifest (a folder that is not records).
      ValueError: A model folder passed by mistake, no records, or no val split (the
        audit compares train with val: copies straddling them leak).
    """
    from trainer.models import files

    model_files = [
        name
        for name in (files.MODEL_NAME, files.BEST_MODEL_NAME, files.METRICS_NAME)
        if os.path.isfile(os.path.join(records_dir, name))
    ]
    if model_files or records_dir.endswith(".keras"):
        what = ", ".join(model_files) or "a Keras model"
        trained = ""
        if model_files:
            metrics = files.read_metrics(os.path.join(records_dir, files.MODEL_NAME))
            named = (metrics.get("settings") or {}).get("records_dir")
            trained = f" (it was trained on --records_dir={named})" if named else ""
        raise ValueError(
            f"--records_dir={records_dir} is a model folder ({what}), not records: pass the "
            f"folder make_records wrote{trained}"
        )
    manifest = Manifest.load(records_dir)
    counts = {split: manifest.num_examples(split) for split in manifest.splits}
    if not sum(counts.values()):
        raise ValueError(
            f"{manifest.path} lists no records (an empty conversion): run make_records on a "
            "folder of labelled photos"
        )
    if not counts.get("val"):
        raise ValueError(
            f"{manifest.path} has no val split: the audit reports near-duplicates that "
            "straddle train and val; rerun make_records with --val_fraction > 0"
        )
    return manifest


def imagenet_head(backbone: str, weights: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The backbone's own ImageNet classifier where its base carries ImageNet weights."""
    classifier = backbones.get(backbone).imagenet_classifier
    if classifier is None or weights.lower() != "imagenet":
        return None
    return classifier()


def analyse(
    features: audit_features.AuditFeatures,
    classifier: tuple[np.ndarray, np.ndarray] | None,
    *,
    folds: int = 5,
    seed: int = 0,
    duplicate_similarity: float = neighbours_lib.DUPLICATE_SIMILARITY,
    make_head: Callable = labels_lib.logistic_head,
) -> Findings:
    """The three analyses of ``features`` (no base, no files: seconds for 25,000 images).

    Raises:
      ValueError: Too few images (per class for ``folds``, or for the neighbours).
    """
    neighbours = neighbours_lib.nearest(features.vectors, neither_lib.OUTLIER_NEIGHBOURS)
    duplicates = neighbours_lib.duplicates(
        neighbours,
        features.splits,
        features.filenames,
        duplicate_similarity,
        vectors=features.vectors,
        thumbnails=features.thumbnails,
    )
    return Findings(
        features=features,
        # Near-copies share a fold: no head predicts a photo whose copy it trained on.
        labels=labels_lib.label_scores(
            features.labels,
            features.vectors,
            folds=folds,
            seed=seed,
            groups=duplicates.group,
            make_head=make_head,
        ),
        neither=neither_lib.scores(features.vectors, neighbours, classifier),
        duplicates=duplicates,
        has_imagenet_head=classifier is not None,
    )


def audit(
    manifest: Manifest,
    output_dir: str,
    *,
    backbone: str,
    weights: str,
    image_size: tuple[int, int],
    folds: int = 5,
    num_show: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    duplicate_similarity: float = neighbours_lib.DUPLICATE_SIMILARITY,
    make_head: Callable = labels_lib.logistic_head,
    progress: bool | None = None,
    engine: str = "auto",
) -> report.Written:
    """Audits every labelled image of ``manifest`` and writes the report to ``output_dir``.

    Raises:
      ValueError: No labelled records, too few images per class for ``folds``.
      FileNotFoundError: A shard is missing.
      trainer.models.model.WeightsError: The base's weights cannot be obtained.
    """
    features = audit_features.cached(
        manifest,
        output_dir,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        engine=engine,
    )
    findings = analyse(
        features,
        imagenet_head(backbone, weights),
        folds=folds,
        seed=seed,
        duplicate_similarity=duplicate_similarity,
        make_head=make_head,
    )
    return report.write(
        findings,
        manifest,
        output_dir,
        image_size=image_size,
        num_show=num_show,
        batch_size=batch_size,
    )
