"""Does the model learn dogs vs cats? End to end, on the real sample.

A subset of the real Kaggle sample is converted by ``records.writer`` (as ``make_records``
would), then ``fit.train`` trains through the real pipeline (fused augmentation) for a
fixed number of steps, and the trained model must classify the val split clearly better
than what knows nothing: ``small_cnn`` from scratch against its own untrained twin (the
same architecture, freshly initialised, evaluated on the same val images) and chance, the
pretrained EfficientNet-Lite0 by a margin only real ImageNet features give. Everything
else in the suite would still pass with shuffled labels, a decode that returns noise, an
augmentation that destroys the image or a broken preprocessing layer; these tests fail on
each (BUILD_NOTES has the runs).

The bars are not set from observed runs (a training trajectory, which another CPU, a GPU
or another TensorFlow changes): they are the untrained/chance accuracy plus three standard
errors of an accuracy measured on this many val images, and for the pretrained base half
of chance's error. Observed accuracies sit far above both (0.70-0.74 and 0.92).
"""

from __future__ import annotations

import csv
import math
import pathlib

import keras
import pytest

from conftest import SAMPLE_DIR
from records import schema, writer
from records.convert_options import ConvertOptions
from records.manifest import Manifest
from trainer.inference import evaluation
from trainer.models import model as model_lib
from trainer.training import fit
from trainer.training.config import TrainConfig

# 2,000 photos per class, spread over the sample's numbering: ~3,200 train / ~800 val.
PER_CLASS = 2000
# 64 px from records stored at <= 80 px (cheap to decode), a fixed budget of 4 epochs x
# 96 steps of 32 (~12,300 training images; ~70 s with the conversion on 2 cores). Fixed steps,
# never a time limit: a loaded machine is slower but trains exactly the same amount.
IMAGE_SIZE = 64
MAX_SHORT_SIDE = 80
EPOCHS = 4
STEPS_PER_EPOCH = 96
# Half-strength fused augmentation: the real augmentation path, mild enough for a short run.
AUGMENT_STRENGTH = 0.5
# How far above the baseline (untrained twin or chance) a model must be, in standard
# errors of an accuracy over the val split: 3 is p ~ 0.001 for a model that learned
# nothing, whatever the hardware; ~0.05 on ~800 val images. The baseline itself moves by
# luck (an untrained twin measured 0.553 where chance was 0.536), so the bar lands near
# 0.59-0.61, while five runs on a shared 2-core machine reached 0.711-0.744 and a run
# with shuffled labels 0.471 (a decode returning noise also ends near 0.5).
STANDARD_ERRORS = 3


def margin(records_dir: pathlib.Path) -> tuple[float, float]:
    """(chance accuracy, ``STANDARD_ERRORS`` standard errors) on the val split.

    Chance is the majority class's share (always answering it); the standard error is that
    of an accuracy near chance measured on this many images.
    """
    counts = Manifest.load(str(records_dir)).splits["val"].class_counts
    total = sum(counts.values())
    chance = max(counts.values()) / total
    return chance, STANDARD_ERRORS * math.sqrt(chance * (1 - chance) / total)


def val_accuracy(model_path: pathlib.Path, records_dir: pathlib.Path) -> float:
    """The model's accuracy over the whole val split, as ``evaluate`` measures it."""
    return evaluation.evaluate(str(model_path), str(records_dir), num_mistakes=0).metrics[
        "accuracy"
    ]


def untrained_twin(model_path: pathlib.Path) -> pathlib.Path:
    """The trained model's architecture with fresh initial weights, saved beside it (so
    ``evaluate`` reads the same metrics.json and records check)."""
    twin = keras.models.clone_model(model_lib.load_model(str(model_path)))
    path = model_path.with_name("untrained.keras")
    twin.save(path)
    return path


def write_subset_table(sample_dir: pathlib.Path, table: pathlib.Path) -> pathlib.Path:
    """A ``filename,label`` table of ``PER_CLASS`` images per class from the sample."""
    rows = []
    for name in schema.CLASS_NAMES:
        paths = sorted(sample_dir.glob(f"{name}.*.jpg"), key=lambda p: int(p.name.split(".")[1]))
        step = max(1, len(paths) // PER_CLASS)
        rows += [(str(path), name) for path in paths[::step][:PER_CLASS]]
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *rows])
    return table


def make_subset_records(table: pathlib.Path, records_dir: pathlib.Path) -> pathlib.Path:
    writer.convert(
        ConvertOptions(
            inputs=(str(table),),
            output_dir=str(records_dir),
            max_short_side=MAX_SHORT_SIDE,
            train_shards=4,
            val_shards=2,
            progress=False,
        )
    )
    return records_dir


def learning_config(records_dir: pathlib.Path, model_dir: pathlib.Path, **overrides) -> TrainConfig:
    """The small backbone's short run: the same recipe as ``make demo``, smaller and shorter."""
    settings = dict(
        records_dir=str(records_dir),
        model_dir=str(model_dir),
        backbone="small_cnn",
        image_size=IMAGE_SIZE,
        pooling="avg",
        optimizer="adam",
        learning_rate=1e-3,
        lr_schedule="cosine",
        batch_size=32,
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        # Every epoch runs: stopping early would make the budget depend on the curve.
        early_stopping_patience=0,
        augment="fused",
        augment_strength=AUGMENT_STRENGTH,
        cache=True,
        seed=7,
        tensorboard=False,
    )
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def subset_records(tmp_path_factory):
    """The subset's records, converted once for both learning tests."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    folder = tmp_path_factory.mktemp("learning")
    return make_subset_records(
        write_subset_table(SAMPLE_DIR, folder / "subset.csv"), folder / "records"
    )


@pytest.mark.slow
def test_small_cnn_learns_dogs_vs_cats(subset_records, tmp_path):
    records_dir = subset_records
    metrics = fit.train(learning_config(records_dir, tmp_path / "model"))
    assert metrics["epochs_completed"] == EPOCHS
    # The final model (what model.keras holds), not the best epoch: no selection on val.
    trained = val_accuracy(tmp_path / "model" / "model.keras", records_dir)
    untrained = val_accuracy(untrained_twin(tmp_path / "model" / "model.keras"), records_dir)
    chance, errors = margin(records_dir)
    # Relative, not a fixed bar: the same model, the same val images, before and after
    # training (and never below chance, which an untrained model may miss by luck).
    bar = max(untrained, chance) + errors
    assert trained > bar, (
        f"val accuracy {trained:.3f} after {EPOCHS} x {STEPS_PER_EPOCH} steps, untrained "
        f"{untrained:.3f}, chance {chance:.3f}: not {errors:.3f} above both (train accuracy "
        f"{metrics['final_train_accuracy']:.3f}); it normally reaches 0.70: check the labels, "
        "the decode and the augmentation"
    )


# The pretrained base: the same records, pipeline and augmentation at 96 px (upscaled from
# the 80-px records), 2 x 30 steps of 32 (~1,900 images), every layer but batch norm
# trained (--freeze_layers=0) at Adam 3e-4, cosine. Measured: 0.917 (BUILD_NOTES, "Learning,
# on a CPU"); small_cnn reaches 0.71-0.74 from 6x as many steps. Its bar is half of chance's
# error (~0.75 on balanced val; an untrained twin would be chance itself, so it adds
# nothing here): 0.17 below what it reaches, so another machine's trajectory does not
# fail it, while the run without the preprocessing layer (0.569) fails. The run with the
# batch-norm layers training reached 0.839 and passes this bar: that fault has its own
# test, test_backbones.py's batch norm in inference mode, which needs no training.
PRETRAINED_IMAGE_SIZE = 96
PRETRAINED_STEPS_PER_EPOCH = 30
PRETRAINED_EPOCHS = 2


@pytest.mark.slow
def test_pretrained_efficientnet_lite0_learns_what_only_imagenet_features_give(
    subset_records, tmp_path, monkeypatch
):
    # An empty Keras cache: the weights are converted from the installed package, offline.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    config = learning_config(
        subset_records,
        tmp_path / "model",
        backbone="efficientnet_lite0",
        weights="imagenet",
        freeze_layers=0,
        learning_rate=3e-4,
        image_size=PRETRAINED_IMAGE_SIZE,
        epochs=PRETRAINED_EPOCHS,
        steps_per_epoch=PRETRAINED_STEPS_PER_EPOCH,
    )
    metrics = fit.train(config)
    chance, errors = margin(subset_records)
    bar = max(chance + errors, 1 - (1 - chance) / 2)
    assert metrics["final_val_accuracy"] > bar, (
        f"val accuracy {metrics['final_val_accuracy']:.3f} after {PRETRAINED_EPOCHS} x "
        f"{PRETRAINED_STEPS_PER_EPOCH} steps, not above {bar:.3f} (half of chance's error); "
        "the ImageNet base normally reaches 0.91: check the weights conversion, the "
        "preprocessing layer and that batch norm stays frozen"
    )
