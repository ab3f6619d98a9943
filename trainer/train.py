r"""Trains a classifier on a records directory, by a named recipe (default: demo).

  train --records_dir=build/records_160 --model_dir=build/demo          # recipe demo
  train --recipe=accurate --records_dir=build/records_292 --model_dir=build/accurate
  train --recipe=demo --epochs=8 ...          # a flag given explicitly overrides the recipe
  train --flagfile=my_run.flags               # flags from a file, one per line

Recipes (trainer/training/recipes.py; results in docs/training.md): demo (the default:
EfficientNet-Lite0's frozen features at 160 px and a head, offline, minutes on a CPU),
accurate (EfficientNet-Lite2, head then a fine-tune on a cached frozen bottom), frozen
(its head alone), vgg16 (the card's recipe; needs the ImageNet weights and a GPU),
small_cnn (from scratch). --recipe=none: the flags' plain defaults with no recipe.

A run killed part-way resumes when the same command is run again (model_dir/backup).
One run at a time per --model_dir: a second one stops at once, naming the first's pid.
"""

from __future__ import annotations

from core import lock, settings
from trainer.models import model as model_lib
from trainer.training import fit, recipes
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
        presets=recipes.PRESETS,
    )


if __name__ == "__main__":
    run()
