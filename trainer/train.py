r"""Trains a classifier on a records directory: the partially frozen VGG16 by default.

  train --records_dir=build/records --model_dir=build/model --epochs=10
  train --records_dir=build/records --model_dir=build/model --backbone=small_cnn   # CPU-sized
  train --flagfile=my_run.flags               # flags from a file, one per line

A run killed part-way resumes when the same command is run again (model_dir/backup).
"""

from __future__ import annotations

from core import settings
from trainer import fit
from trainer import model as model_lib
from trainer import strategy as strategy_lib
from trainer.config import TrainConfig


def main(config: TrainConfig) -> int:
    if config.num_cpu_devices != 1:
        # Logical CPU devices must exist before TensorFlow initialises its devices.
        strategy_lib.configure_cpu_devices(config.num_cpu_devices)
    fit.train(config)
    return 0


def run() -> None:
    settings.run(
        TrainConfig,
        main,
        __name__,
        errors=(ValueError, FileNotFoundError, model_lib.WeightsError),
    )


if __name__ == "__main__":
    run()
