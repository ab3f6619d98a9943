"""``train(config) -> metrics``: the whole training run, as a library function.

The absl entry point (``trainer/train.py``) only turns flags into a ``TrainConfig`` and
calls ``train``. A run has one or two phases (``_run_phase``): phase one trains with
``freeze_layers`` frozen; the optional fine-tune phase unfreezes down to
``fine_tune_freeze_layers`` at a lower rate.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

import keras
import pandas as pd
import tensorflow as tf
from absl import logging

from records.manifest import Manifest
from trainer import plots
from trainer.models import model as model_lib
from trainer.models.files import (
    BEST_MODEL_NAME,
    CURVES_NAME,
    HISTORY_NAME,
    METRICS_NAME,
    MODEL_NAME,
)
from trainer.training import bottom_cache, optimizers, precision, progress, resume
from trainer.training import callbacks as callbacks_lib
from trainer.training import features as features_lib
from trainer.training import strategy as strategy_lib
from trainer.training.config import TrainConfig
from trainer.training.data import TrainData, make_data, model_augmenter

FINE_TUNE_BACKUP_SUFFIX = "_fine_tune"


@dataclasses.dataclass(frozen=True)
class _Phase:
    """One call of ``fit``: its epochs, rate, trainable layers and backup directory."""

    name: str
    initial_epoch: int
    end_epoch: int
    learning_rate: float
    backup_dir: str
    # Base layers to freeze before compiling; None keeps the model as built.
    freeze_layers: int | None = None
    lr_schedule: str = "constant"
    # 0 for phase one, 1 for fine-tuning: recorded in the phase's backups.
    index: int = 0


@dataclasses.dataclass
class _Run:
    """What both phases share."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    data: TrainData
    fit_model: keras.Model
    inference_model: keras.Model
    write_dir: str
    images_per_sec: list[float] = dataclasses.field(default_factory=list)
    # The best val_accuracy so far and its epoch, so a later phase replaces best.keras
    # only if better.
    best: float | None = None
    best_epoch: int | None = None
    # The caller's own callbacks (``train``'s ``callbacks``), in every phase's fit.
    extra_callbacks: Sequence[keras.callbacks.Callback] = ()


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    learning_rate: float,
    total_steps: int,
    lr_schedule: str | None = None,
) -> None:
    """Compiles ``model`` for one training phase: optimizer, schedule (default
    ``config.lr_schedule``), loss, XLA."""
    lr_schedule = lr_schedule or config.lr_schedule
    model.compile(
        optimizer=optimizers.make_optimizer(
            config.optimizer, learning_rate, config.momentum, lr_schedule, total_steps
        ),
        loss=(
            "sparse_categorical_crossentropy" if config.head == "softmax" else "binary_crossentropy"
        ),
        metrics=["accuracy"],
        jit_compile=optimizers.JIT_COMPILE[config.jit_compile],
    )


def _run_phase(run: _Run, phase: _Phase, append_history: bool) -> None:
    config = run.config
    if phase.freeze_layers is not None:
        model_lib.set_frozen_layers(run.inference_model, phase.freeze_layers)
    with run.strategy.scope():
        # Compiling is what makes a new trainable set take effect.
        compile_model(
            run.fit_model,
            config,
            phase.learning_rate,
            (phase.end_epoch - phase.initial_epoch) * run.data.steps_per_epoch,
            phase.lr_schedule,
        )
    logging.info(
        "%s: epochs %d..%d, learning rate %g, %d of %d weights trainable",
        phase.name,
        phase.initial_epoch + 1,
        phase.end_epoch,
        phase.learning_rate,
        len(run.inference_model.trainable_weights),
        len(run.inference_model.weights),
    )
    callbacks, throughput, best = callbacks_lib.make_callbacks(
        write_dir=run.write_dir,
        backup_dir=phase.backup_dir,
        phase=phase.index,
        inference_model=run.inference_model,
        global_batch_size=config.batch_size,
        backup_freq=config.backup_frequency,
        early_stopping_patience=config.early_stopping_patience,
        append_history=append_history,
        tensorboard=config.tensorboard,
        progress_mode=progress.progress_mode(sys.stdout),
        extra_callbacks=run.extra_callbacks,
    )
    # A resumed phase then puts its backup's best in place (resume.BackupAndRestore).
    best.best, best.best_epoch = run.best, run.best_epoch
    with run.strategy.scope():
        run.fit_model.fit(
            run.data.train,
            initial_epoch=phase.initial_epoch,
            epochs=phase.end_epoch,
            steps_per_epoch=run.data.steps_per_epoch,
            validation_data=run.data.val,
            validation_steps=run.data.validation_steps,
            callbacks=callbacks,
            # callbacks_lib's EpochProgress prints instead: a bar within the epoch on a
            # terminal, exactly one line per epoch elsewhere (trainer/training/progress.py).
            verbose=0,
        )
    run.images_per_sec.extend(throughput.per_epoch)
    run.best, run.best_epoch = best.best, best.best_epoch


def _history_metrics(history_csv: str) -> dict:
    history = pd.read_csv(history_csv)
    if history.empty or "val_accuracy" not in history:
        return {}
    best = history.loc[history["val_accuracy"].idxmax()]
    return {
        # Rows, not the last epoch number: phase two's numbering continues after
        # phase one's planned epochs even when early stopping ended phase one sooner.
        "epochs_completed": len(history),
        "final_train_accuracy": float(history["accuracy"].iloc[-1]),
        "final_train_loss": float(history["loss"].iloc[-1]),
        "final_val_accuracy": float(history["val_accuracy"].iloc[-1]),
        "final_val_loss": float(history["val_loss"].iloc[-1]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_accuracy_epoch": int(best["epoch"]) + 1,
        "best_val_loss": float(history["val_loss"].min()),
        # From callbacks.InputWait: the share of step time spent waiting for input.
        "input_wait_share_per_epoch": (
            history["input_wait_share"].tolist() if "input_wait_share" in history else None
        ),
    }


def build_models(config: TrainConfig, strategy: tf.distribute.Strategy):
    """(the model that trains, the inference model that is saved); they share weights."""
    with strategy.scope():
        inference_model = model_lib.build_model(config.model_config())
        fit_model = inference_model
        # keras-cv layers (--augment=keras_cv_model) or decode-once crops on the accelerator.
        augmenter = model_augmenter(config)
        if augmenter is not None:
            fit_model = model_lib.with_augmenter(
                inference_model, augmenter.layer, augmenter.input_shape
            )
    return fit_model, inference_model


def train(config: TrainConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Trains the model described by ``config`` and writes its outputs to ``config.model_dir``.

    Outputs (chief only): model.keras (final), best.keras (best val_accuracy),
    history.csv, metrics.json, training_curves.png, tensorboard/. A run killed part-way
    resumes from ``model_dir/backup`` when the same command is run again.

    Args:
      config: The run's settings.
      callbacks: Extra Keras callbacks for every phase's ``fit`` (the same objects in
        both phases), after the run's own and before its backup: at an epoch end they
        see the complete logs, and the backup commits what they changed. The ``fit``
        they see trains the head alone in phase one of ``--input_mode=features``.

    Returns:
      The metrics also written to metrics.json.

    Raises:
      ValueError: Bad settings (batch size vs replicas, too few examples, ...).
      FileNotFoundError: No records in ``config.records_dir``.
      model_lib.WeightsError: The base weights cannot be obtained.
    """
    manifest = Manifest.load(config.records_dir)
    strategy = strategy_lib.make_strategy(config.strategy, config.tpu)
    replicas = strategy.num_replicas_in_sync
    strategy_lib.check_batch_size(config.batch_size, replicas)
    policy = precision.apply_policy(precision.choose_policy(config.mixed_precision, strategy))
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    chief = strategy_lib.is_chief(strategy)
    label = strategy_lib.worker_label(strategy)
    os.makedirs(config.model_dir, exist_ok=True)
    # Only the chief writes into model_dir; other workers write the same files (saving
    # may need every worker to take part) into a temporary directory that is then removed.
    write_dir = config.model_dir if chief else tempfile.mkdtemp(prefix=f"trainer_{label}_")
    backup_dir = os.path.join(
        config.model_dir, callbacks_lib.BACKUP_SUBDIR if chief else f"backup_{label}"
    )
    fit_model, inference_model = build_models(config, strategy)
    feature_cache = None
    if config.input_mode == features_lib.INPUT_MODE:
        feature_cache = features_lib.compute(
            inference_model,
            manifest,
            config.batch_size,
            engine=config.engine,
            cache_dir=config.model_dir,
        )
        with strategy.scope():
            # Phase one trains the head's layers (shared with inference_model) on features.
            fit_model = features_lib.head_model(inference_model)
    data = make_data(config, manifest, strategy, feature_cache)
    logging.info(
        "training %s: %d epochs x %d steps, global batch %d (%d per replica x %d replicas), "
        "policy %s",
        fit_model.name,
        config.epochs,
        data.steps_per_epoch,
        config.batch_size,
        config.batch_size // replicas,
        replicas,
        policy,
    )
    run = _Run(
        config,
        strategy,
        data,
        fit_model,
        inference_model,
        write_dir,
        extra_callbacks=tuple(callbacks),
    )
    phases = [
        _Phase(
            "phase one",
            0,
            config.epochs,
            config.learning_rate,
            backup_dir,
            lr_schedule=config.lr_schedule,
        )
    ]
    if config.fine_tune_epochs:
        phases.append(
            _Phase(
                "fine-tuning",
                config.epochs,
                config.epochs + config.fine_tune_epochs,
                config.fine_tune_learning_rate,
                # Its own backup directory: the optimizer differs from phase one's.
                backup_dir + FINE_TUNE_BACKUP_SUFFIX,
                freeze_layers=config.fine_tune_freeze,
                lr_schedule=config.fine_tune_lr_schedule,
                index=1,
            )
        )
    history_csv = os.path.join(write_dir, HISTORY_NAME)
    # Resume in the last phase with a backup. Phase one's backup is kept until the run is
    # done, so a phase-two backup means phase one is over; with phase one's alone, its
    # fit restores it and either goes on or, if phase one was over, runs no epoch and
    # leaves its final weights for phase two.
    states = [resume.read_backup_state(phase.backup_dir) for phase in phases]
    start = max((i for i, state in enumerate(states) if state is not None), default=0)
    resume_state = states[start]
    if resume_state is not None:
        logging.info(
            "resuming from the backup in %s (%s): %d epoch(s) done, last backup at batch %d "
            "(%s). The weights, optimizer, best score and early-stopping state are restored; "
            "an interrupted epoch is run again from its start",
            phases[start].backup_dir,
            phases[start].name,
            resume_state["epoch"],
            resume_state["batch"],
            "epoch end" if resume_state.get("epoch_end") else "mid-epoch",
        )
        # The killed run may have written rows for epochs after its last backup.
        resume.truncate_history(history_csv, resume_state["epoch"])
    cached_bottom = None
    for phase in phases[start:]:
        if phase.index > 0 and config.fine_tune_cached_views:
            # The frozen bottom runs once over augmented views; only the top trains.
            cached_bottom = bottom_cache.compute(inference_model, manifest, config)
            run.data = make_data(config, manifest, strategy, cached_bottom)
            with strategy.scope():
                run.fit_model = bottom_cache.top_model(inference_model, config.fine_tune_freeze)
        elif phase.index > 0 and feature_cache is not None:
            # Fine-tuning trains base layers, so it streams images through the whole model.
            run.data = make_data(
                dataclasses.replace(config, input_mode="stream"), manifest, strategy
            )
            run.fit_model = inference_model
        _run_phase(run, phase, append_history=phase.index > 0 or resume_state is not None)

    best_path = os.path.join(write_dir, BEST_MODEL_NAME)
    shipped_epoch = None
    if config.restore_best and run.best_epoch is not None and os.path.isfile(best_path):
        # The best epoch on val, not the last: a head that over-fits after its best epoch
        # would otherwise ship a worse model than the one it had (docs/training.md).
        inference_model.load_weights(best_path)
        shipped_epoch = run.best_epoch + 1
        logging.info("model.keras: the best epoch's weights (epoch %d)", shipped_epoch)
    inference_model.save(os.path.join(write_dir, MODEL_NAME))
    metrics = {
        "strategy": strategy_lib.strategy_name(strategy),
        "replicas": replicas,
        "dtype_policy": policy,
        "steps_per_epoch": data.steps_per_epoch,
        "resumed_from": resume_state,
        "train_images_per_sec": (
            sum(run.images_per_sec) / len(run.images_per_sec) if run.images_per_sec else None
        ),
        "train_images_per_sec_per_epoch": run.images_per_sec,
        # --input_mode=features: the one pass through the base (the epochs' images/s above
        # count feature vectors through the head).
        "feature_cache": (
            {
                "seconds": feature_cache.seconds,
                "images_per_sec": feature_cache.images_per_sec,
            }
            if feature_cache is not None
            else None
        ),
        "bottom_cache": (
            {
                "views": cached_bottom.views,
                "seconds": cached_bottom.seconds,
                "images_per_sec": cached_bottom.images_per_sec,
            }
            if cached_bottom is not None
            else None
        ),
        **_history_metrics(history_csv),
        # The epoch whose weights model.keras holds (1-based; the last one without
        # --restore_best or when no epoch was better than the first).
        "model_epoch": shipped_epoch,
        "settings": dataclasses.asdict(config),
        # How the training images were stored: predict prepares its inputs the same way.
        "records_settings": manifest.data.get("settings") or {},
    }
    # The val accuracy of the weights in model.keras (what export reports as its source's).
    metrics["model_val_accuracy"] = metrics.get(
        "best_val_accuracy" if shipped_epoch is not None else "final_val_accuracy"
    )
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
    # Only now: until the outputs are written, a rerun resumes instead of starting over.
    for phase in phases:
        shutil.rmtree(phase.backup_dir, ignore_errors=True)
    return metrics
