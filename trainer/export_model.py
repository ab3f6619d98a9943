r"""Exports a trained model for serving: a SavedModel that takes JPEG bytes, and TFLite models.

  export_model --model=build/model/model.keras --output_dir=build/export

Writes into --output_dir (created whole, or not at all):
  saved_model/          tf.saved_model.load()-able without Keras or this project; signature
                        serving_default: JPEG bytes [N] -> p_dog, class_id, class_name, valid
                        (decoded in the graph exactly as validation decodes the records);
                        serving_images: uint8 images [N, H, W, 3] -> the same outputs
  model_float16.tflite  uint8 images [N, H, W, 3] -> p_dog, float16 weights
  model_int8.tflite     the same, int8 post-training quantization calibrated on
                        --calibration_images images of the training records
  metadata.json         input size, labels, the records' settings, the model's val accuracy,
                        every file's sha256, the TFLite ops left in float

The training records are found as predict finds them: --records_dir, or by default the
records_dir that train wrote into metrics.json beside --model. One export at a time per
--output_dir: a second one stops at once, naming the first's pid.
"""

from __future__ import annotations

import dataclasses

from core import lock, settings
from trainer.serving import CALIBRATION_IMAGES

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Settings of ``export_model``."""

    model: str = setting(help="A .keras model saved by train (model.keras or best.keras).")
    output_dir: str = setting(help="Folder to write the SavedModel, TFLite models and metadata.")
    records_dir: str | None = setting(
        None,
        "Records the model was trained on; their training images calibrate the int8 model "
        "(default: the records_dir in metrics.json beside --model).",
    )
    calibration_images: int = setting(
        CALIBRATION_IMAGES,
        "Training images the int8 quantization is calibrated on.",
        minimum=1,
    )
    overwrite: bool = setting(False, "Replace an existing --output_dir.")

    def __post_init__(self):
        settings.check(self)


def output_dir_lock(config: ExportConfig) -> lock.DirectoryLock:
    """The lock an export holds on its --output_dir (``core.lock``).

    Beside the folder, not in it (``<parent>/.<name>.lock``): the export is written into
    a staging folder in the same parent and renamed into place at the end, replacing the
    old folder with --overwrite, so a lock file inside --output_dir would be swapped out
    mid-run. The parent is no good either: two exports into sibling folders may run
    together.
    """
    return lock.DirectoryLock(
        config.output_dir, command="export_model", flag="--output_dir", beside=True
    )


def main(config: ExportConfig) -> int:
    from trainer.serving import export

    with output_dir_lock(config):
        metadata = export.export(
            config.model,
            config.output_dir,
            config.records_dir,
            config.calibration_images,
            config.overwrite,
        )
    for name, info in metadata["files"].items():
        if not name.startswith(export.SAVED_MODEL_DIR + "/"):
            print(f"{config.output_dir}/{name}: {info['bytes']:,} bytes")
    saved_model_bytes = sum(
        info["bytes"]
        for name, info in metadata["files"].items()
        if name.startswith(export.SAVED_MODEL_DIR + "/")
    )
    print(f"{config.output_dir}/{export.SAVED_MODEL_DIR}/: {saved_model_bytes:,} bytes")
    return 0


def run() -> None:
    settings.run(
        ExportConfig, main, __name__, errors=(ValueError, FileNotFoundError, FileExistsError)
    )


if __name__ == "__main__":
    run()
