r"""Fine-tunes the partially frozen VGG16 on a records directory.

  train --records_dir=build/records --model_dir=build/model --epochs=10
  train --flagfile=my_run.flags               # flags from a file, one per line

A run killed part-way resumes when the same command is run again (model_dir/backup).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from records import cli
from trainer import model as model_lib

_RECORDS_DIR = flags.DEFINE_string("records_dir", None, "Directory made by make_records.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where the model, history and metrics go.")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs (phase one).")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "Global batch size (split across replicas; must divide evenly)."
)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-4, "Initial learning rate.")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"], "LR schedule.")
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer", "sgd", ["sgd", "adam", "adamw", "rmsprop"], "Optimizer."
)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Square input size in pixels (>= 32).")
_WEIGHTS = flags.DEFINE_string(
    "weights",
    "imagenet",
    "imagenet (Keras download/cache in $KERAS_HOME/models), none (random), or the path of "
    f"{model_lib.NOTOP_WEIGHTS_FILE}.",
)
_FREEZE_LAYERS = flags.DEFINE_integer(
    "freeze_layers",
    model_lib.DEFAULT_FREEZE_LAYERS,
    "How many VGG16 layers (counting its input) stay frozen: 15 = through block4, 0 = none.",
)
_DENSE_UNITS = flags.DEFINE_integer("dense_units", 256, "Hidden dense units of the head.")
_DROPOUT = flags.DEFINE_float("dropout", 0.5, "Dropout rate of the head.")
_HEAD = flags.DEFINE_enum(
    "head", "softmax", list(model_lib.HEADS), "2-way softmax or 1-unit sigmoid (P(dog))."
)
_POOLING = flags.DEFINE_enum("pooling", "flatten", list(model_lib.POOLINGS), "Head's pooling.")
_AUGMENT = flags.DEFINE_enum("augment", "fused", ["none", "fused", "keras_cv"], "Augmentation.")
_AUGMENT_STRENGTH = flags.DEFINE_float("augment_strength", 1.0, "Augmentation strength.")
_AUGMENT_ON = flags.DEFINE_enum(
    "augment_on",
    "data",
    ["data", "model"],
    "data: augment in tf.data (--augment); model: keras-cv layers in front of the model, on "
    "the accelerator, active in training only (the saved model has none).",
)
_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", None, "Steps per epoch (default: one pass over train)."
)
_VALIDATION_STEPS = flags.DEFINE_integer(
    "validation_steps", None, "Validation steps (default: all of val)."
)
_SEED = flags.DEFINE_integer("seed", None, "Random seed (weights, shuffling, augmentation).")
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic", False, "Deterministic input order and ops (slower)."
)
_CACHE = flags.DEFINE_bool("cache", False, "Cache decoded images in memory.")
_STRATEGY = flags.DEFINE_enum(
    "strategy",
    "auto",
    ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy; auto = mirrored on several GPUs, else one device. multi_worker "
    "reads TF_CONFIG.",
)
_TPU = flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu (empty: local TPU VM).")
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices", 1, "Split the CPU into this many logical devices (to try mirroring)."
)
_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision",
    "auto",
    ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
    "Keras dtype policy; auto = fp16 on GPUs >= compute 7.0, bf16 on TPU, else float32.",
)
_BACKUP_FREQ = flags.DEFINE_string(
    "backup_freq", "epoch", "BackupAndRestore frequency: 'epoch' or a number of steps."
)
_EARLY_STOPPING = flags.DEFINE_integer(
    "early_stopping_patience", 5, "Epochs without val_accuracy gain before stopping; 0 = off."
)
_TENSORBOARD = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard logs.")
_FINE_TUNE_EPOCHS = flags.DEFINE_integer(
    "fine_tune_epochs", 0, "Second phase: epochs with more layers unfrozen (0 = no phase two)."
)
_FINE_TUNE_FREEZE_LAYERS = flags.DEFINE_integer(
    "fine_tune_freeze_layers", 11, "Phase two: base layers kept frozen (11 = through block3)."
)
_FINE_TUNE_LEARNING_RATE = flags.DEFINE_float(
    "fine_tune_learning_rate", 1e-5, "Phase two learning rate."
)


def _backup_freq(value: str) -> str | int:
    if value == "epoch":
        return value
    try:
        return int(value)
    except ValueError:
        raise app.UsageError(f"--backup_freq={value}: 'epoch' or a number of steps") from None


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in (_RECORDS_DIR, _MODEL_DIR):
        if not flag.value:
            raise app.UsageError(f"--{flag.name} is required")
    # Logical CPU devices must exist before TensorFlow initialises, so before anything else.
    from trainer import strategy as strategy_lib

    if _NUM_CPU_DEVICES.value != 1:
        try:
            strategy_lib.configure_cpu_devices(_NUM_CPU_DEVICES.value)
        except ValueError as e:
            raise app.UsageError(str(e)) from None

    from trainer import fit

    config = fit.TrainConfig(
        records_dir=_RECORDS_DIR.value,
        model_dir=_MODEL_DIR.value,
        epochs=_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value,
        lr_schedule=_LR_SCHEDULE.value,
        optimizer=_OPTIMIZER.value,
        momentum=_MOMENTUM.value,
        image_size=(_IMAGE_SIZE.value, _IMAGE_SIZE.value),
        weights=_WEIGHTS.value,
        freeze_layers=_FREEZE_LAYERS.value,
        dense_units=_DENSE_UNITS.value,
        dropout=_DROPOUT.value,
        head=_HEAD.value,
        pooling=_POOLING.value,
        augment=_AUGMENT.value,
        augment_strength=_AUGMENT_STRENGTH.value,
        augment_on=_AUGMENT_ON.value,
        steps_per_epoch=_STEPS_PER_EPOCH.value,
        validation_steps=_VALIDATION_STEPS.value,
        seed=_SEED.value,
        deterministic=_DETERMINISTIC.value,
        cache=_CACHE.value,
        strategy=_STRATEGY.value,
        tpu=_TPU.value,
        mixed_precision=_MIXED_PRECISION.value,
        backup_freq=_backup_freq(_BACKUP_FREQ.value),
        early_stopping_patience=_EARLY_STOPPING.value,
        tensorboard=_TENSORBOARD.value,
        fine_tune_epochs=_FINE_TUNE_EPOCHS.value,
        fine_tune_freeze_layers=_FINE_TUNE_FREEZE_LAYERS.value,
        fine_tune_learning_rate=_FINE_TUNE_LEARNING_RATE.value,
    )
    logging.info("settings: %s", config)
    try:
        fit.check_config(config)
        fit.train(config)
    except (ValueError, FileNotFoundError, model_lib.WeightsError) as e:
        # User mistakes and missing inputs: one clear line, no traceback (--verbosity=1
        # logs it, for when the ValueError came from deeper down).
        logging.debug("details", exc_info=True)
        logging.error("%s", e)
        print(f"train: error: {e}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
