"""Does the model learn dogs vs cats? The small backbone, end to end, on the real sample.

A subset of the real Kaggle sample is converted by ``records.writer`` (as ``make_records``
would), then ``fit.train`` trains ``small_cnn`` through the real pipeline (fused
augmentation) for a fixed number of steps, and the validation accuracy must clear a bar
set well below what it reaches. Everything else in the suite would still pass with
shuffled labels, a decode that returns noise or an augmentation that destroys the image;
this test fails on each (BUILD_NOTES has the runs).
"""

from __future__ import annotations

import csv
import pathlib

import pytest

from records import schema, writer
from records.convert_options import ConvertOptions
from trainer import fit
from trainer.config import TrainConfig

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
# Five runs on a shared 2-core machine reached 0.711-0.744 (mean 0.731) in 61-86 s each.
# 0.62 is 0.09 below the worst of them, and seven standard errors above chance (0.5) on
# the ~800 val images: shuffled labels or a decode returning noise end near 0.5.
MIN_VAL_ACCURACY = 0.62


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


@pytest.mark.slow
def test_small_cnn_learns_dogs_vs_cats(sample_dir, tmp_path):
    records_dir = make_subset_records(
        write_subset_table(sample_dir, tmp_path / "subset.csv"), tmp_path / "records"
    )
    metrics = fit.train(learning_config(records_dir, tmp_path / "model"))
    assert metrics["epochs_completed"] == EPOCHS
    # The final model (what model.keras holds), not the best epoch: no selection on val.
    assert metrics["final_val_accuracy"] > MIN_VAL_ACCURACY, (
        f"val accuracy {metrics['final_val_accuracy']:.3f} after {EPOCHS} x {STEPS_PER_EPOCH} "
        f"steps (train accuracy {metrics['final_train_accuracy']:.3f}); it normally reaches "
        "0.70: check the labels, the decode and the augmentation"
    )
