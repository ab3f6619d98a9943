"""P(dog) for a folder or zip of unlabelled images: a Kaggle submission (the `predict` library).

The CSV is `id,label` (id = the file name's stem, sorted numerically; label = P(dog)).

Which files: images by name, as ``records.inputs.unlabelled.list_unlabelled`` selects them (image
extensions, case-insensitive; hidden files, ``__MACOSX`` and archives left out). Every
other file (``Thumbs.db``, ``notes.txt``) is no row of the CSV: it is listed with the
reason in ``<output stem>.ignored.json``.

How an image becomes the model's input: exactly as validation sees it, through
``pipeline.photos.photo_input``: ``records.photo.prepare`` (how ``make_records`` stored
the training photos: format by content, size check, EXIF orientation, RGB, shrunk to the
records' short side, JPEG) with the settings of the records the model was trained on
(``trainer.models.files.trained_on``), then the eval decode. The exported SavedModel runs
the same function in its graph.

Images that cannot be read or prepared never stop the run: they are listed with the
reason (the same words as in a manifest's ``skipped``) in
``<output stem>.bad_images.json`` and get ``bad_image_label``, so the submission still
has a row for every image. File names that are not UTF-8 are written escaped
(``records.inputs.sources.display_name``) in the CSV and both sidecars.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import tensorflow as tf
from absl import logging

from pipeline import decode, photos
from records import photo_batches, photo_header, stored_photo
from records.inputs import sources, unlabelled
from records.photo import StoreSettings
from trainer.inference import tta as tta_lib
from trainer.models import engine as engine_lib
from trainer.models import files as model_files
from trainer.models import model as model_lib
from trainer.serving import CALIBRATION_IMAGES
from trainer.serving import export as export_lib
from trainer.serving import tflite as tflite_lib

INT8 = engine_lib.INT8


def submission_id(name: str) -> str:
    """`test1/17.jpg` -> `17`: the file name without folders and extension, as text.

    Names that are not valid UTF-8 are shown escaped (``\\xff``), as everywhere else.
    """
    return sources.display_name(os.path.splitext(os.path.basename(name))[0])


def _sort_key(image_id: str):
    # Kaggle ids are integers: 2 before 10. Any other stems come after, alphabetically.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def image_dataset(
    items: Sequence[sources.SourceImage],
    settings: StoreSettings,
    image_size: Sequence[int],
    refused: dict[int, str],
    num_threads: int | None = None,
) -> tf.data.Dataset:
    """``(index, uint8 image)`` per item that prepares, exactly as validation decodes it.

    Each file goes through ``pipeline.photos.photo_input``: ``records.photo.prepare``
    (as ``make_records`` stored the training photos), then the eval decode: the same
    function the SavedModel serves. Batches of photos are read and prepared on threads,
    one traced call per batch, by ``records.photo_batches.run`` (as ``make_records``
    does), so a photo the decoder refuses fails only itself.

    Args:
      items: The images.
      settings: How the training records stored photos (``trained_on``).
      image_size: The model's (height, width).
      refused: Filled with ``index -> reason`` for every item that yields nothing:
        unreadable, refused by the checks or by the decoder (``make_records``' words).
      num_threads: Threads preparing batches (default: one per core).

    Returns:
      An unbatched dataset, in item order.
    """
    image_size = decode.size_pair(image_size)
    function = photos.photo_input_function(settings, image_size)

    def generate():
        rows = photo_batches.run(
            function,
            enumerate(items),
            lambda pair: pair[1].read(),
            num_threads or os.cpu_count() or 1,
        )
        for row in rows:
            index = row.item[0]
            if row.reason is not None:
                refused[index] = row.reason
                continue
            image, status = row.outputs
            if status == photo_header.OK:
                yield index, image
            else:  # A status has no words; make_records' check of the bytes gives them
                # (the same header checks, so it refuses them too; else the status' name).
                words = stored_photo.reason_for(row.data, settings)
                refused[index] = words or photo_header.STATUSES[status]

    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([*image_size, 3], tf.uint8),
        ),
    )


class _PDogAsColumn:
    """The int8 flatbuffer's P(dog) [N] as a [N, 1] output, what ``model.prob_dog`` reads."""

    engine = INT8

    def __init__(self, runner: engine_lib.LiteRTRunner):
        self._runner = runner

    def predict_on_batch(self, images):
        return self._runner.predict_on_batch(images)[:, None]


def int8_runner(model, trained: model_files.TrainedOn, cache_dir: str) -> _PDogAsColumn:
    """``model`` quantized to int8 as ``export_model`` does (calibrated on the first
    ``trainer.serving.CALIBRATION_IMAGES`` training images), cached in ``cache_dir``, run by LiteRT.

    Raises:
      FileNotFoundError: The training records (the calibration images) cannot be found.
    """
    manifest = trained.manifest
    if manifest is None:
        raise FileNotFoundError(
            f"--engine={INT8} calibrates the int8 model on the training records, which cannot "
            f"be found ({trained.source}): pass --records_dir=<the records it was trained on>"
        )

    def convert() -> bytes:
        calibration = export_lib.representative_images(
            manifest, model_lib.input_size(model), CALIBRATION_IMAGES
        )
        return tflite_lib.tflite_model(model, "int8", calibration)

    # Keyed by the training shards too: other records would calibrate other ranges.
    shards = ",".join(str(shard.sha256) for shard in manifest.split("train").shards)
    content = engine_lib.cached_flatbuffer(model, cache_dir, convert, "int8", shards)
    return _PDogAsColumn(engine_lib.LiteRTRunner(content))


def _write_json(path: str, entries: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=2, ensure_ascii=False)


def _write_csv(path: str, rows: Iterable[tuple[str, float]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows((image_id, f"{label:.6f}") for image_id, label in rows)


def predict(
    model_path: str,
    input_path: str,
    output_csv: str,
    batch_size: int = 64,
    bad_image_label: float = 0.5,
    records_dir: str | None = None,
    tta: str = "none",
    engine: str = "auto",
) -> dict:
    """Writes the submission CSV and its two sidecars; returns a summary.

    Args:
      model_path: A ``.keras`` model saved by ``train``.
      input_path: Folder or ``.zip`` of images.
      output_csv: The submission to write; ``<stem>.bad_images.json`` and
        ``<stem>.ignored.json`` are written beside it.
      batch_size: Images per model call.
      bad_image_label: The label of images that cannot be read or prepared.
      records_dir: The records the model was trained on (see ``model_files.trained_on``).
      tta: Test-time augmentation, one of ``trainer.inference.tta.TTA_MODES``.
      engine: What runs the model, one of ``trainer.models.engine.PREDICT_ENGINES``.

    Raises:
      FileNotFoundError: Missing model, input, or training records' manifest.
      ValueError: No images in the input, not a loadable model, or an unknown ``tta``.
    """
    tta_lib.check_mode(tta)  # Before the slow model load.
    engine_lib.check_engine(engine, engine_lib.PREDICT_ENGINES)
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"--input={input_path}: no such folder or zip")
    listing = unlabelled.list_unlabelled(input_path)  # InputError is a ValueError
    items = listing.images
    model = model_lib.load_model(model_path)
    trained = model_files.trained_on(model_path, records_dir)
    settings = trained.store
    image_size = model_lib.input_size(model)
    logging.info(
        "predict: %d images (%d other files ignored), prepared like the training records "
        "(max_short_side %s, jpeg_quality %d, from %s), decoded at %s, tta=%s",
        len(items),
        len(listing.ignored),
        settings.max_short_side,
        settings.jpeg_quality,
        trained.source,
        image_size,
        tta,
    )
    cache_dir = os.path.dirname(os.path.abspath(model_path))
    if engine == INT8:
        runner = int8_runner(model, trained, cache_dir)
    else:
        runner = engine_lib.runner(model, engine, len(items) * tta_lib.passes(tta), cache_dir)
    bad: dict[int, str] = {}
    data = image_dataset(items, settings, image_size, bad).batch(batch_size).prefetch(1)
    probabilities: dict[int, float] = {}
    for indices, batch in data:
        prob_dog = model_lib.prob_dog(tta_lib.predict_batch(runner, batch, tta))
        probabilities.update(zip(indices.numpy().tolist(), prob_dog.tolist()))
    rows = sorted(
        (
            (submission_id(item.name), probabilities.get(index, bad_image_label))
            for index, item in enumerate(items)
        ),
        key=lambda row: _sort_key(row[0]),
    )
    ids = [row[0] for row in rows]
    if len(set(ids)) != len(ids):
        logging.warning("some file names share an id (e.g. 1.jpg and 1.png): the CSV repeats ids")
    os.makedirs(os.path.dirname(os.path.abspath(output_csv)), exist_ok=True)
    _write_csv(output_csv, rows)
    stem = os.path.splitext(output_csv)[0]
    bad_list = [
        {
            "name": sources.display_name(items[index].name),
            "id": submission_id(items[index].name),
            "reason": reason,
        }
        for index, reason in sorted(bad.items())
    ]
    bad_path = stem + ".bad_images.json"
    _write_json(bad_path, bad_list)
    ignored_list = [
        {"name": sources.display_name(item.name), "reason": reason}
        for item, reason in listing.ignored
    ]
    ignored_path = stem + ".ignored.json"
    _write_json(ignored_path, ignored_list)
    for entry in bad_list:
        logging.warning(
            "bad image %s: %s (label %s written)", entry["name"], entry["reason"], bad_image_label
        )
    for entry in ignored_list:
        logging.info("ignored %s: %s", entry["name"], entry["reason"])
    summary = {
        "images": len(items),
        "predicted": len(probabilities),
        "bad_images": len(bad_list),
        "ignored": len(ignored_list),
        "output": output_csv,
        "bad_images_file": bad_path,
        "ignored_file": ignored_path,
        "tta": tta,
        "engine": runner.engine,
    }
    logging.info("predict: %s", summary)
    return summary
