r"""Writes one augmented training batch as a PNG grid, each image titled cat or dog.

  preview --records_dir=build/records --output=build/demo/batch.png
  preview --flagfile=my_run.flags --output=batch.png     # the flags of a train run

``preview`` takes every flag ``train`` takes (its settings are ``train``'s plus
--output and --columns), so the batch is made by the trainer's own input code with the
same augmentation, strength, image size, batch size and seed; with --seed and
--deterministic it is exactly the first batch ``train`` fits on. Use it to check at a
glance that the labels match the pictures and that the augmentation leaves a
recognisable animal.
"""

from __future__ import annotations

import dataclasses

from core import settings
from trainer.training import recipes
from trainer.training.config import TrainConfig

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewConfig(TrainConfig):
    """Settings of ``preview``: ``train``'s, plus where the picture goes."""

    output: str = setting(help="PNG to write.")
    columns: int = setting(8, "Images per row of the grid.", minimum=1)
    # Accepted, so that a train command line or flagfile works as it is; nothing is written.
    model_dir: str = setting("", "Ignored (train's; a preview writes no model).")


def main(config: PreviewConfig) -> int:
    from trainer.training import show_batch

    picture = show_batch.write_batch_picture(config, config.output, config.columns)
    counts = ", ".join(
        f"{picture.labels.count(name)} {name}" for name in sorted(set(picture.labels))
    )
    print(
        f"wrote {picture.path}: {len(picture.labels)} training images as train sees them "
        f"(augment={config.augment}, strength {config.augment_strength:g}), "
        f"{picture.rows} x {picture.columns}, {counts}"
    )
    return 0


def run() -> None:
    settings.run(PreviewConfig, main, __name__, presets=recipes.PRESETS)


if __name__ == "__main__":
    run()
