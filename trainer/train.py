r"""Trains a classifier on a records directory: the partially frozen VGG16 by default.

  train --records_dir=build/records --model_dir=build/model --epochs=10
  train --records_dir=build/records --model_dir=build/model --backbone=small_cnn   # CPU-sized
  train --flagfile=my_run.flags               # flags from a file, one per line

A run killed part-way resumes when the same command is run again (model_dir/backup).
One run at a time per --model_dir: a second one stops at once, naming the first's pid.
"""

from __future__ import annotations

from core import lock, settings
from trainer.models import model as model_lib
from trainer.training import fit
from trainer.training import strategy as strategy_lib
from trainer.training.config import TrainConfig


def model_dir_lock(config: TrainConfig) -> lock.DirectoryLock:
    """The lock a run holds on its --model_dir (``core.lock``).

    With --strategy=multi_worker every worker writes into model_dir (the chief its
    outputs, the others their own backup folders), so each worker holds a lock of its own,
    named after its TF_CONFIG task: the workers of one cluster do not block each other, a
    second cluster into the same folder does.
    """
    name = lock.LOCK_NAME
    if config.strategy == "multi_worker":
        task = strategy_lib.parse_tf_config()["task"]
        name = f"{lock.LOCK_NAME}.{task['type']}_{task['index']}"
    return lock.DirectoryLock(config.model_dir, command="train", flag="--model_dir", name=name)


def main(config: TrainConfig) -> int:
    # First: a second run into a busy folder stops before it reads or builds anything.
    with model_dir_lock(config):
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
