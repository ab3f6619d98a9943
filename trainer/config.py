"""``TrainConfig``: every setting of a training run, each written once.

The ``train`` command's flags are derived from these fields (``records.config_flags``);
library callers (the tests, the benchmarks) build the dataclass directly and get the
same checks. Allowed-values lists are imported from the module that branches on them.
"""

from __future__ import annotations

import dataclasses

from pipeline import dataset
from records import config_flags
from trainer import model as model_lib
from trainer import optimizers, precision, strategy

setting = config_flags.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What one training run needs (the flags of ``train``)."""

    records_dir: str = setting(help="Directory made by make_records.")
    model_dir: str = setting(help="Where the model, history and metrics go.")
    epochs: int = setting(10, "Training epochs (phase one).", minimum=1)
    batch_size: int = setting(
        32, "Global batch size (split across replicas; must divide evenly).", minimum=1
    )
    learning_rate: float = setting(1e-4, "Initial learning rate.", minimum=0)
    lr_schedule: str = setting("constant", "LR schedule.", choices=optimizers.LR_SCHEDULES)
    optimizer: str = setting("sgd", "Optimizer.", choices=optimizers.OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0, below=1)
    image_size: int = setting(128, "Square input size in pixels (VGG16 needs >= 32).", minimum=32)
    weights: str = setting(
        "imagenet",
        "imagenet (Keras download/cache in $KERAS_HOME/models), none (random), or the path of "
        f"{model_lib.NOTOP_WEIGHTS_FILE}.",
    )
    freeze_layers: int = setting(
        model_lib.DEFAULT_FREEZE_LAYERS,
        "How many VGG16 layers (counting its input) stay frozen: 15 = through block4, 0 = none.",
        minimum=0,
    )
    dense_units: int = setting(256, "Hidden dense units of the head.", minimum=1)
    dropout: float = setting(0.5, "Dropout rate of the head.", minimum=0, below=1)
    head: str = setting(
        "softmax", "2-way softmax or 1-unit sigmoid (P(dog)).", choices=model_lib.HEADS
    )
    pooling: str = setting("flatten", "Head's pooling.", choices=model_lib.POOLINGS)
    augment: str = setting(
        "fused",
        "fused: crop-window decode in tf.data (fast); keras_cv_data: keras-cv layers in "
        "tf.data; keras_cv_model: keras-cv layers in front of the model, on the accelerator, "
        "training only (the saved model has none); none.",
        choices=dataset.AUGMENTS,
    )
    augment_strength: float = setting(1.0, "Augmentation strength (scales every range).", minimum=0)
    steps_per_epoch: int | None = setting(
        None, "Steps per epoch (default: one pass over train).", minimum=1
    )
    validation_steps: int | None = setting(
        None, "Validation steps (default: all of val).", minimum=1
    )
    seed: int | None = setting(None, "Random seed (weights, shuffling, augmentation).")
    deterministic: bool = setting(False, "Deterministic input order and ops (slower).")
    cache: bool = setting(
        False, "Keep the parsed, still-encoded records in memory after the first epoch."
    )
    shuffle_buffer: int = setting(
        dataset.DEFAULT_SHUFFLE_BUFFER, "Records in the training shuffle buffer.", minimum=1
    )
    data_service: str | None = setting(
        None,
        "grpc://HOST:PORT of a tf.data service dispatcher: run the input pipeline on its "
        "workers (for input-bound accelerator hosts; start them with pipeline_service).",
    )
    data_service_mode: str = setting(
        "parallel_epochs",
        "tf.data service processing mode: parallel_epochs (each trainer gets full passes) or "
        "distributed_epoch (the workers split one pass).",
        choices=dataset.DATA_SERVICE_MODES,
    )
    strategy: str = setting(
        "auto",
        "tf.distribute strategy; auto = mirrored on several GPUs, else one device. multi_worker "
        "reads TF_CONFIG.",
        choices=strategy.STRATEGIES,
    )
    tpu: str = setting("", "TPU address for --strategy=tpu (empty: local TPU VM).")
    num_cpu_devices: int = setting(
        1, "Split the CPU into this many logical devices (to try mirroring).", minimum=1
    )
    mixed_precision: str = setting(
        "auto",
        "Keras dtype policy; auto = fp16 on GPUs >= compute 7.0, bf16 on TPU, else float32.",
        choices=precision.POLICIES,
    )
    backup_freq: str = setting("epoch", "BackupAndRestore frequency: 'epoch' or a number of steps.")
    early_stopping_patience: int = setting(
        5, "Epochs without val_accuracy gain before stopping; 0 = off.", minimum=0
    )
    tensorboard: bool = setting(True, "Write TensorBoard logs.")
    fine_tune_epochs: int = setting(
        0, "Second phase: epochs with more layers unfrozen (0 = no phase two).", minimum=0
    )
    fine_tune_freeze_layers: int = setting(
        11, "Phase two: base layers kept frozen (11 = through block3).", minimum=0
    )
    fine_tune_learning_rate: float = setting(1e-5, "Phase two learning rate.", minimum=0)

    def __post_init__(self):
        config_flags.check(self)
        if self.learning_rate <= 0 or self.fine_tune_learning_rate <= 0:
            raise ValueError(
                f"learning_rate={self.learning_rate} and fine_tune_learning_rate="
                f"{self.fine_tune_learning_rate} must be > 0"
            )
        if self.backup_freq != "epoch" and not (
            self.backup_freq.isdigit() and int(self.backup_freq) >= 1
        ):
            raise ValueError(f"backup_freq={self.backup_freq}: 'epoch' or a number of steps >= 1")

    @property
    def backup_frequency(self) -> str | int:
        """``backup_freq`` as Keras' BackupAndRestore takes it."""
        return "epoch" if self.backup_freq == "epoch" else int(self.backup_freq)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    def model_config(self, freeze_layers: int | None = None) -> model_lib.ModelConfig:
        return model_lib.ModelConfig(
            image_size=self.image_shape,
            weights=self.weights,
            freeze_layers=self.freeze_layers if freeze_layers is None else freeze_layers,
            dense_units=self.dense_units,
            dropout=self.dropout,
            head=self.head,
            pooling=self.pooling,
        )
