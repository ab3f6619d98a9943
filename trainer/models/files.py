"""What a model folder holds, and what the model in it was trained on.

``train --model_dir=D`` writes the files named here; evaluate, predict, export and the
audit read them. ``trained_on`` is the one resolver of a model's records settings (how
its training records stored photos, which every prediction path must repeat): it
imports nothing from training, so inference does not load the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

from records.manifest import Manifest
from records.photo import StoreSettings

MODEL_NAME = (
    "model.keras"  # the shipped weights: the best epoch's, or the last with --norestore_best
)
BEST_MODEL_NAME = "best.keras"  # the best epoch's (by val accuracy)
METRICS_NAME = "metrics.json"  # final metrics, settings, records_settings
HISTORY_NAME = "history.csv"  # one row per epoch
CURVES_NAME = "training_curves.png"


@dataclasses.dataclass(frozen=True)
class TrainedOn:
    """How a model's training records stored photos, and where that was read.

    Attributes:
      store: The records' photo settings (``records.photo.StoreSettings``).
      source: The file the settings came from (a manifest.json or metrics.json).
      manifest: The training records' manifest when they are reachable, else None.
      metrics: ``metrics.json`` beside the model ({} when there is none).
    """

    store: StoreSettings
    source: str
    manifest: Manifest | None
    metrics: dict


def metrics_path(model_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), METRICS_NAME)


def read_metrics(model_path: str) -> dict:
    """``metrics.json`` beside the model, {} when there is none.

    Raises:
      ValueError: It is not valid JSON (naming the file).
    """
    path = metrics_path(model_path)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); retrain, or pass --records_dir=<the records the "
            "model was trained on>"
        ) from e


def _describe(store: StoreSettings) -> str:
    return f"max_short_side={store.max_short_side}, jpeg_quality={store.jpeg_quality}"


def check_records(model_path: str, manifest: Manifest) -> TrainedOn:
    """``trained_on`` for records given by the user (already read): they must store photos
    as the model's training records did, or the model would see other pixels.

    Raises:
      ValueError: The records' settings contradict metrics.json's (naming both files).
    """
    metrics = read_metrics(model_path)
    recorded = metrics.get("records_settings")
    store = manifest.store_settings
    if recorded and StoreSettings.from_settings(recorded) != store:
        raise ValueError(
            f"--records_dir={manifest.records_dir} stores photos with {_describe(store)} "
            f"({manifest.path}), but {metrics_path(model_path)} says the model was "
            f"trained on records with {_describe(StoreSettings.from_settings(recorded))}: "
            "pass the records it was trained on (or records made with the same "
            "--max_short_side and --jpeg_quality), or leave out --records_dir"
        )
    return TrainedOn(store, manifest.path, manifest, metrics)


def trained_on(model_path: str, records_dir: str | None = None) -> TrainedOn:
    """The records settings ``model_path`` was trained with.

    From ``records_dir``'s manifest when given, else from the ``records_settings`` that
    ``train`` wrote into ``metrics.json`` beside the model (the records need not exist
    any more), else from the manifest of the ``records_dir`` that file names.

    Raises:
      FileNotFoundError: Nothing says how the model's records stored photos (no
        metrics.json and no ``records_dir``), or the records named cannot be found.
      ValueError: ``records_dir``'s settings contradict metrics.json's, or metrics.json
        is not valid JSON. Each message names the file and the fix.
    """
    if records_dir:
        return check_records(model_path, Manifest.load(records_dir))
    metrics = read_metrics(model_path)
    recorded = metrics.get("records_settings")
    manifest = None
    named = (metrics.get("settings") or {}).get("records_dir")
    if named and os.path.isdir(named):
        try:
            manifest = Manifest.load(named)
        except (FileNotFoundError, ValueError) as e:
            logging.warning("the training records %s cannot be read: %s", named, e)
    if recorded:
        return TrainedOn(
            StoreSettings.from_settings(recorded), metrics_path(model_path), manifest, metrics
        )
    if manifest is not None:
        return TrainedOn(manifest.store_settings, manifest.path, manifest, metrics)
    if not metrics:
        raise FileNotFoundError(
            f"no {METRICS_NAME} beside {model_path} (train writes it) and no --records_dir: "
            "cannot tell how the model's training records stored photos; pass "
            "--records_dir=<the records it was trained on>"
        )
    raise FileNotFoundError(
        f"{metrics_path(model_path)} names no records settings and its records_dir "
        f"{named!r} has no manifest.json from here; pass --records_dir=<the records it was "
        "trained on> (only their manifest.json is read)"
    )
