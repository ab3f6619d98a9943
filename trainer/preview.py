r"""Writes one augmented training batch as a PNG grid, each image titled cat or dog.

  preview --records_dir=build/records --output=build/demo/batch.png
  preview --records_dir=build/records --output=batch.png --augment=keras_cv_data --seed=1

The batch is made by the trainer's own input code with the same settings as ``train``
(pass it the same --batch_size, --image_size, --augment, --augment_strength and --seed);
with --seed and --deterministic it is exactly the first batch ``train`` fits on. Use it
to check at a glance that the labels match the pictures and that the augmentation leaves
a recognisable animal.
"""

from __future__ import annotations

import dataclasses

from pipeline import dataset
from records import config_flags
from trainer.config import TrainConfig

setting = config_flags.setting
# The settings shared with train take train's defaults: one definition each.
_TRAIN_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewConfig:
    """Settings of ``preview``."""

    records_dir: str = setting(help="Directory made by make_records.")
    output: str = setting(help="PNG to write.")
    batch_size: int = setting(
        _TRAIN_DEFAULTS["batch_size"], "Images in the batch (train's --batch_size).", minimum=1
    )
    image_size: int = setting(
        _TRAIN_DEFAULTS["image_size"], "Square input size in pixels (train's).", minimum=32
    )
    augment: str = setting(
        _TRAIN_DEFAULTS["augment"], "Augmentation, as train's --augment.", choices=dataset.AUGMENTS
    )
    augment_strength: float = setting(
        _TRAIN_DEFAULTS["augment_strength"], "Augmentation strength (train's).", minimum=0
    )
    seed: int | None = setting(None, "Random seed (train's --seed).")
    deterministic: bool = setting(
        False, "With --seed: exactly train's first batch (train's --deterministic)."
    )
    shuffle_buffer: int = setting(
        _TRAIN_DEFAULTS["shuffle_buffer"], "Records in the shuffle buffer (train's).", minimum=1
    )
    columns: int = setting(8, "Images per row of the grid.", minimum=1)

    def __post_init__(self):
        config_flags.check(self)

    def train_config(self) -> TrainConfig:
        """The ``train`` settings whose first batch this previews."""
        return TrainConfig(
            records_dir=self.records_dir,
            model_dir="",  # Nothing is written by a preview.
            batch_size=self.batch_size,
            image_size=self.image_size,
            augment=self.augment,
            augment_strength=self.augment_strength,
            seed=self.seed,
            deterministic=self.deterministic,
            shuffle_buffer=self.shuffle_buffer,
        )


def main(config: PreviewConfig) -> int:
    from trainer import show_batch

    picture = show_batch.write_batch_picture(config.train_config(), config.output, config.columns)
    counts = {name: picture.labels.count(name) for name in sorted(set(picture.labels))}
    print(
        f"wrote {picture.path}: {len(picture.labels)} training images as train sees them "
        f"({config.augment}, strength {config.augment_strength:g}), {picture.rows} x "
        f"{picture.columns}, labels {counts}"
    )
    return 0


def run() -> None:
    config_flags.run(PreviewConfig, main, __name__)


if __name__ == "__main__":
    run()
