"""`train(config) -> metrics`: the whole training run, as a library function.

The absl entry point (`trainer/train.py`) only parses flags into a `TrainConfig` and
calls `train`. Everything here takes plain arguments, so tests call it directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import pandas as pd
import tensorflow as tf
from absl import logging

from records import schema
from trainer import callbacks as callbacks_lib
from trainer import model as model_lib
from trainer import plots, precision
from trainer import strategy as strategy_lib

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")
AUGMENT_ON = ("data", "model")
MODEL_NAME = "model.keras"
METRICS_NAME = "metrics.json"
CURVES_NAME = "training_curves.png"
FINE_TUNE_BACKUP_SUFFIX = "_fine_tune"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs (the flags of `trainer.train`, minus logging).

    Attributes mirror the flags; see `trainer/train.py` for their help texts.
    """

    records_dir: str
    model_dir: str
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    optimizer: str = "sgd"
    momentum: float = 0.9
    image_size: tuple[int, int] = (128, 128)
    weights: str = "imagenet"
    freeze_layers: int = model_lib.DEFAULT_FREEZE_LAYERS
    dense_units: int = 256
    dropout: float = 0.5
    head: str = "softmax"
    pooling: str = "flatten"
    augment: str = "fused"
    augment_strength: float = 1.0
    augment_on: str = "data"
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    seed: int | None = None
    deterministic: bool = False
    cache: bool = False
    strategy: str = "auto"
    tpu: str = ""
    mixed_precision: str = "auto"
    backup_freq: str | int = "epoch"
    early_stopping_patience: int = 5
    tensorboard: bool = True
    fine_tune_epochs: int = 0
    fine_tune_freeze_layers: int = 11
    fine_tune_learning_rate: float = 1e-5

    def model_config(self, freeze_layers: int | None = None) -> model_lib.ModelConfig:
        return model_lib.ModelConfig(
            image_size=tuple(self.image_size),
            weights=self.weights,
            freeze_layers=self.freeze_layers if freeze_layers is None else freeze_layers,
            dense_units=self.dense_units,
            dropout=self.dropout,
            head=self.head,
            pooling=self.pooling,
        )


def check_config(config: TrainConfig) -> None:
    """Rejects settings that cannot work, before anything expensive starts.

    Raises:
      ValueError: Naming the setting and what to use instead.
    """
    if config.epochs < 1:
        raise ValueError(f"epochs={config.epochs} must be >= 1")
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size} must be >= 1")
    if config.learning_rate <= 0:
        raise ValueError(f"learning_rate={config.learning_rate} must be > 0")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={config.optimizer!r}: expected one of {OPTIMIZERS}")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={config.lr_schedule!r}: expected one of {LR_SCHEDULES}")
    if config.augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on={config.augment_on!r}: expected one of {AUGMENT_ON}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout={config.dropout} must be in [0, 1)")
    if any(s < 32 for s in config.image_size):
        raise ValueError(f"image_size={config.image_size}: VGG16 needs at least 32x32")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={config.steps_per_epoch} must be >= 1")
    if config.validation_steps is not None and config.validation_steps < 1:
        raise ValueError(f"validation_steps={config.validation_steps} must be >= 1")
    if config.backup_freq != "epoch" and (
        not isinstance(config.backup_freq, int) or config.backup_freq < 1
    ):
        raise ValueError(f"backup_freq={config.backup_freq!r}: 'epoch' or a number of steps >= 1")
    if config.fine_tune_epochs < 0:
        raise ValueError(f"fine_tune_epochs={config.fine_tune_epochs} must be >= 0")


def make_optimizer(name: str, learning_rate, momentum: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate)
    return keras.optimizers.RMSprop(learning_rate)


def _learning_rate(config: TrainConfig, base_rate: float, total_steps: int):
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_rate, decay_steps=max(1, total_steps))
    return base_rate


def _datasets(config: TrainConfig, strategy: tf.distribute.Strategy, global_batch: int):
    """(train, val) distributed datasets; train repeats forever, val is one pass."""
    # Imported here: the pipeline pulls in keras-cv, which the evaluate/predict paths skip.
    from pipeline import dataset as dataset_lib

    augment = config.augment if config.augment_on == "data" else "none"

    def _labels_for_head(ds: tf.data.Dataset) -> tf.data.Dataset:
        if config.head == "softmax":
            return ds  # Sparse int labels, as the pipeline yields them.
        # The 1-unit sigmoid head trains on float [B, 1] targets.
        return ds.map(lambda images, labels: (images, tf.cast(labels[:, None], tf.float32)))

    def train_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = dataset_lib.train_dataset(
            config.records_dir,
            # The pipeline takes the global batch and applies ctx's per-replica split itself.
            global_batch,
            image_size=tuple(config.image_size),
            augment=augment,
            augment_strength=config.augment_strength,
            seed=config.seed,
            deterministic=config.deterministic,
            cache=config.cache,
            input_context=ctx,
        )
        # The pipeline yields one pass; Keras counts epochs with steps_per_epoch.
        return _labels_for_head(ds).repeat()

    def val_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = _labels_for_head(
            dataset_lib.eval_dataset(
                config.records_dir,
                global_batch,
                split="val",
                image_size=tuple(config.image_size),
                cache=config.cache,
                input_context=ctx,
            )
        )
        if strategy.num_replicas_in_sync == 1:
            return ds
        # Keras 3 cannot evaluate a step where replicas get batches of different sizes
        # (an empty or partial last batch fails in AddN), so with several replicas val is
        # re-batched into full batches and run for a fixed number of steps.
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        return ds.unbatch().repeat().batch(per_replica, drop_remainder=True)

    train_data = strategy.distribute_datasets_from_function(train_fn)
    val_data = strategy.distribute_datasets_from_function(val_fn)
    return train_data, val_data


def _history_metrics(history_csv: str) -> dict:
    history = pd.read_csv(history_csv)
    if history.empty or "val_accuracy" not in history:
        return {}
    best = history.loc[history["val_accuracy"].idxmax()]
    return {
        "epochs_completed": int(history["epoch"].max()) + 1,
        "final_train_accuracy": float(history["accuracy"].iloc[-1]),
        "final_train_loss": float(history["loss"].iloc[-1]),
        "final_val_accuracy": float(history["val_accuracy"].iloc[-1]),
        "final_val_loss": float(history["val_loss"].iloc[-1]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_accuracy_epoch": int(best["epoch"]) + 1,
        "best_val_loss": float(history["val_loss"].min()),
    }


def train(config: TrainConfig) -> dict:
    """Trains the model described by `config` and writes its outputs to `config.model_dir`.

    Outputs (chief only): model.keras (final), best.keras (best val_accuracy),
    history.csv, metrics.json, training_curves.png, tensorboard/. A run killed part-way
    resumes from `model_dir/backup` when the same command is run again.

    Returns:
      The metrics also written to metrics.json.

    Raises:
      ValueError: Bad settings (batch size vs replicas, too few examples, ...).
      FileNotFoundError: No records in `config.records_dir`.
      model_lib.WeightsError: The base weights cannot be obtained.
    """
    check_config(config)
    manifest = schema.read_manifest(config.records_dir)
    strategy = strategy_lib.make_strategy(config.strategy, config.tpu)
    replicas = strategy.num_replicas_in_sync
    strategy_lib.check_batch_size(config.batch_size, replicas)
    policy = precision.apply_policy(precision.choose_policy(config.mixed_precision, strategy))
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    num_train = manifest["splits"]["train"]["num_examples"]
    num_val = manifest["splits"].get("val", {}).get("num_examples", 0)
    if num_val == 0:
        raise ValueError(
            f"{config.records_dir} has no val examples; rerun make_records with a val fraction > 0"
        )
    steps_per_epoch = config.steps_per_epoch or num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {num_train} training examples"
        )
    validation_steps = config.validation_steps
    if validation_steps is None and replicas > 1:
        # Full global batches only (see _datasets): val minus less than one batch.
        validation_steps = max(1, num_val // config.batch_size)
        logging.info(
            "%d replicas: validating on %d full batches (%d of %d val examples)",
            replicas,
            validation_steps,
            validation_steps * config.batch_size,
            num_val,
        )

    chief = strategy_lib.is_chief(strategy)
    label = strategy_lib.worker_label(strategy)
    os.makedirs(config.model_dir, exist_ok=True)
    # Only the chief writes into model_dir; other workers write the same files (saving
    # may need every worker to take part) into a temporary directory that is then removed.
    write_dir = config.model_dir if chief else tempfile.mkdtemp(prefix=f"trainer_{label}_")
    backup_dir = os.path.join(
        config.model_dir, callbacks_lib.BACKUP_SUBDIR if chief else f"backup_{label}"
    )
    resume_state = callbacks_lib.read_backup_state(backup_dir)
    if resume_state is not None:
        logging.info(
            "resuming from the backup in %s: %d epoch(s) done, last backup at batch %d. Keras "
            "restores the weights and optimizer state and repeats the interrupted epoch",
            backup_dir,
            resume_state["epoch"],
            resume_state["batch"],
        )

    train_data, val_data = _datasets(config, strategy, config.batch_size)
    with strategy.scope():
        inference_model = model_lib.build_model(config.model_config())
        fit_model = inference_model
        if config.augment_on == "model" and config.augment != "none":
            from pipeline import augment as augment_lib

            augmenter = augment_lib.make_augmenter(
                strength=config.augment_strength, seed=config.seed
            )
            fit_model = model_lib.with_augmenter(inference_model, augmenter)
        total_steps = config.epochs * steps_per_epoch
        fit_model.compile(
            optimizer=make_optimizer(
                config.optimizer,
                _learning_rate(config, config.learning_rate, total_steps),
                config.momentum,
            ),
            loss=(
                "sparse_categorical_crossentropy"
                if config.head == "softmax"
                else "binary_crossentropy"
            ),
            metrics=["accuracy"],
        )
    logging.info(
        "training %s: %d epochs x %d steps, global batch %d (%d per replica x %d replicas), "
        "policy %s, %d of %d weights trainable",
        fit_model.name,
        config.epochs,
        steps_per_epoch,
        config.batch_size,
        config.batch_size // replicas,
        replicas,
        policy,
        len(inference_model.trainable_weights),
        len(inference_model.weights),
    )

    history_csv = os.path.join(write_dir, callbacks_lib.HISTORY_NAME)
    callbacks, throughput, best = callbacks_lib.make_callbacks(
        write_dir=write_dir,
        backup_dir=backup_dir,
        inference_model=inference_model,
        global_batch_size=config.batch_size,
        backup_freq=config.backup_freq,
        early_stopping_patience=config.early_stopping_patience,
        append_history=resume_state is not None,
        tensorboard=config.tensorboard,
    )
    # A run killed in phase two resumes there (phase one's backup is gone by then).
    in_phase_two = bool(config.fine_tune_epochs) and (
        callbacks_lib.read_backup_state(backup_dir + FINE_TUNE_BACKUP_SUFFIX) is not None
    )
    if not in_phase_two:
        with strategy.scope():
            fit_model.fit(
                train_data,
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch,
                validation_data=val_data,
                validation_steps=validation_steps,
                callbacks=callbacks,
                verbose=2,
            )
    if config.fine_tune_epochs:
        _fine_tune(
            config,
            strategy,
            fit_model,
            inference_model,
            train_data,
            val_data,
            steps_per_epoch,
            validation_steps,
            write_dir,
            backup_dir,
            throughput,
            best,
        )

    inference_model.save(os.path.join(write_dir, MODEL_NAME))
    metrics = {
        "strategy": strategy_lib.strategy_name(strategy),
        "replicas": replicas,
        "dtype_policy": policy,
        "steps_per_epoch": steps_per_epoch,
        "resumed_from": resume_state,
        "train_images_per_sec": (
            sum(throughput.per_epoch) / len(throughput.per_epoch) if throughput.per_epoch else None
        ),
        "train_images_per_sec_per_epoch": throughput.per_epoch,
        **_history_metrics(history_csv),
        "settings": dataclasses.asdict(config),
    }
    if chief:
        with open(os.path.join(config.model_dir, METRICS_NAME), "w") as f:
            json.dump(metrics, f, indent=2)
        plots.plot_history(history_csv, os.path.join(config.model_dir, CURVES_NAME))
        logging.info(
            "done: final val_accuracy %s, best %s; outputs in %s",
            metrics.get("final_val_accuracy"),
            metrics.get("best_val_accuracy"),
            config.model_dir,
        )
    else:
        shutil.rmtree(write_dir, ignore_errors=True)
    return metrics


def _fine_tune(
    config,
    strategy,
    fit_model,
    inference_model,
    train_data,
    val_data,
    steps_per_epoch,
    validation_steps,
    write_dir,
    backup_dir,
    throughput,
    best,
):
    """Second phase: unfreeze down to `fine_tune_freeze_layers` and train at a lower rate."""
    base = model_lib.vgg16_base(inference_model)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= config.fine_tune_freeze_layers
    with strategy.scope():
        # Recompiling is what makes the new trainable set take effect.
        fit_model.compile(
            optimizer=make_optimizer(
                config.optimizer,
                _learning_rate(
                    config,
                    config.fine_tune_learning_rate,
                    config.fine_tune_epochs * steps_per_epoch,
                ),
                config.momentum,
            ),
            loss=fit_model.loss,
            metrics=["accuracy"],
        )
    logging.info(
        "fine-tuning: layers from %d of the base trainable, learning rate %g, %d epoch(s)",
        config.fine_tune_freeze_layers,
        config.fine_tune_learning_rate,
        config.fine_tune_epochs,
    )
    # Its own backup directory: the optimizer differs from phase one's.
    callbacks, phase_throughput, phase_best = callbacks_lib.make_callbacks(
        write_dir=write_dir,
        backup_dir=backup_dir + FINE_TUNE_BACKUP_SUFFIX,
        inference_model=inference_model,
        global_batch_size=config.batch_size,
        backup_freq=config.backup_freq,
        early_stopping_patience=config.early_stopping_patience,
        append_history=True,
        tensorboard=config.tensorboard,
    )
    # Keep phase one's best score, so best.keras is only replaced by a better model.
    if best.best is not None:
        phase_best.best = best.best
    with strategy.scope():
        fit_model.fit(
            train_data,
            initial_epoch=config.epochs,
            epochs=config.epochs + config.fine_tune_epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=val_data,
            validation_steps=validation_steps,
            callbacks=callbacks,
            verbose=2,
        )
    throughput.per_epoch.extend(phase_throughput.per_epoch)
