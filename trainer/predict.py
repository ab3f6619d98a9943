r"""Predicts P(dog) for a folder or zip of unlabelled images: a Kaggle submission CSV.

  predict --model=build/model/model.keras --input=test1.zip --output=build/submission.csv

The CSV is `id,label` (id = the file name's stem, e.g. 17 for 17.jpg, sorted numerically;
label = probability of dog). Only image files are rows (by extension, case-insensitive;
hidden files, __MACOSX and archives left out): every other file is listed with the reason
in <output stem>.ignored.json. Images that cannot be read or decoded do not stop the run:
they are logged, listed with the reason in <output stem>.bad_images.json, and get label
--bad_image_label (0.5, the least costly guess under log loss) so the submission still has
a row for every image.

Each image is prepared exactly as make_records stored the training records (EXIF
orientation, pixel limit, --max_short_side, --jpeg_quality) and decoded as validation
decodes them. Those settings come from the records' manifest.json: --records_dir, or by
default the records_dir that train wrote into metrics.json beside --model.
"""

from __future__ import annotations

import dataclasses

from core import settings
from trainer.inference import tta as tta_lib
from trainer.models import engine as engine_lib

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictConfig:
    """Settings of ``predict``."""

    model: str = setting(help="A .keras model saved by train.")
    input: str = setting(help="Folder or .zip of images (e.g. Kaggle test1/).")
    output: str = setting(help="Submission CSV to write.")
    batch_size: int = setting(64, "Batch size.", minimum=1)
    bad_image_label: float = setting(
        0.5, "Label written for images that cannot be decoded.", minimum=0, maximum=1
    )
    records_dir: str | None = setting(
        None,
        "Records the model was trained on; images are prepared with their settings "
        "(default: the records_dir in metrics.json beside --model).",
    )
    tta: str = setting(
        "none",
        "Test-time augmentation: flip averages P(dog) over each image and its mirror.",
        choices=tta_lib.TTA_MODES,
    )
    engine: str = setting(
        "auto",
        "What runs the model: keras, litert (converted once to float32 TFLite, cached beside "
        "--model, run by XNNPACK on every core; the same P(dog) within float32 round-off), "
        "auto (litert when there are enough images to pay for the conversion), or "
        "litert_int8 (quantized as export_model does, calibrated on the training records: "
        "faster, with the accuracy cost in docs/serving.md).",
        choices=engine_lib.PREDICT_ENGINES,
    )

    def __post_init__(self):
        settings.check(self)


def main(config: PredictConfig) -> int:
    from trainer.inference import prediction

    summary = prediction.predict(
        config.model,
        config.input,
        config.output,
        config.batch_size,
        config.bad_image_label,
        config.records_dir,
        config.tta,
        config.engine,
    )
    print(
        f"wrote {summary['output']}: {summary['predicted']} of {summary['images']} images "
        f"predicted, {summary['bad_images']} bad (listed in {summary['bad_images_file']}), "
        f"{summary['ignored']} other files ignored (listed in {summary['ignored_file']})"
    )
    return 0


def run() -> None:
    settings.run(PredictConfig, main, __name__)


if __name__ == "__main__":
    run()
