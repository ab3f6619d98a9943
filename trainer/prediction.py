"""P(dog) for a folder or zip of unlabelled images: a Kaggle submission (the `predict` library).

The CSV is `id,label` (id = the file name's stem, sorted numerically; label = P(dog)).

Which files: images by name, as ``records.unlabelled.list_unlabelled`` selects them (image
extensions, case-insensitive; hidden files, ``__MACOSX`` and archives left out). Every
other file (``Thumbs.db``, ``notes.txt``) is no row of the CSV: it is listed with the
reason in ``<output stem>.ignored.json``.

How an image becomes the model's input: exactly as validation sees it. ``make_records``
stores each image through ``records.images.prepare`` (size-checked against
``MAX_PIXELS`` before decoding, turned upright by its EXIF orientation, converted to an
RGB JPEG, Lanczos-downscaled to ``--max_short_side`` and re-encoded at
``--jpeg_quality``), and ``pipeline.dataset.eval_dataset`` decodes the stored JPEG with
``pipeline.decode.decode_and_resize``. Predict runs the same two steps on each file, with
the settings of the records the model was trained on (``record_settings``), so its
pixels equal validation's, bit for bit. (Decoding the original JPEG with a DCT
downscale, as predict did before, differed from validation by 3.2 levels per pixel on
average at 128x128 for records made with --max_short_side=160, and flipped 3% of a
trained model's val predictions.)

Images that cannot be read or prepared never stop the run: they are listed with the
reason (the same words as in a manifest's ``skipped``) in
``<output stem>.bad_images.json`` and get ``bad_image_label``, so the submission still
has a row for every image. File names that are not UTF-8 are written escaped
(``records.sources.display_name``) in the CSV and both sidecars.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import tensorflow as tf
from absl import logging

from pipeline import decode
from records import images as images_lib
from records import sources, unlabelled
from records.convert_options import ConvertOptions
from records.manifest import Manifest
from trainer import model as model_lib
from trainer import tta as tta_lib


@dataclasses.dataclass(frozen=True)
class RecordSettings:
    """How the training records stored each image; predict prepares its inputs the same way.

    Attributes:
      max_short_side: ``make_records --max_short_side`` (None: original sizes).
      jpeg_quality: ``make_records --jpeg_quality`` (for images it re-encoded).
      source: Where these came from, for the log (a manifest path, or why defaults).
    """

    max_short_side: int | None = ConvertOptions.max_short_side
    jpeg_quality: int = ConvertOptions.jpeg_quality
    source: str = "make_records defaults"


def settings_from_manifest(manifest: Manifest) -> RecordSettings:
    """The image settings a records directory was written with."""
    settings = manifest.data.get("settings") or {}
    return RecordSettings(
        max_short_side=manifest.max_short_side,
        jpeg_quality=int(settings.get("jpeg_quality", ConvertOptions.jpeg_quality)),
        source=manifest.path,
    )


def record_settings(model_path: str, records_dir: str | None = None) -> RecordSettings:
    """The settings of the records ``model_path`` was trained on.

    From ``records_dir``'s manifest when given; else from ``records_settings`` in the
    ``metrics.json`` that ``train`` writes beside the model; else (older metrics) from the
    manifest of the ``records_dir`` it names; else (a model without ``metrics.json``)
    ``make_records``' defaults, with a warning.

    Raises:
      FileNotFoundError: ``records_dir`` (given, or named by ``metrics.json``) has no
        manifest; the message says to pass ``--records_dir``.
      ValueError: ``metrics.json`` is not readable JSON.
    """
    if records_dir:
        return settings_from_manifest(Manifest.load(records_dir))
    from trainer import fit  # Only for the file name; fit imports pandas and matplotlib.

    metrics_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), fit.METRICS_NAME)
    if not os.path.isfile(metrics_path):
        logging.warning(
            "no %s beside --model and no --records_dir: preparing images like records made "
            "with make_records' defaults (original size). If the model was trained on records "
            "made with --max_short_side, pass --records_dir=<those records>",
            fit.METRICS_NAME,
        )
        return RecordSettings()
    try:
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{metrics_path} is not valid JSON ({e}); pass --records_dir") from e
    stored = metrics.get("records_settings")
    if stored:
        # train records the settings themselves, so the records folder need not exist here.
        return RecordSettings(
            max_short_side=stored.get("max_short_side"),
            jpeg_quality=int(stored.get("jpeg_quality", ConvertOptions.jpeg_quality)),
            source=metrics_path,
        )
    trained_on = (metrics.get("settings") or {}).get("records_dir")
    if not trained_on:
        logging.warning("%s names no records_dir: using make_records' defaults", metrics_path)
        return RecordSettings()
    try:
        return settings_from_manifest(Manifest.load(trained_on))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"the model was trained on {trained_on!r} ({metrics_path}), which has no "
            f"manifest.json from here; pass --records_dir=<those records> (only their "
            f"manifest.json is read): {e}"
        ) from None


def submission_id(name: str) -> str:
    """`test1/17.jpg` -> `17`: the file name without folders and extension, as text.

    Names that are not valid UTF-8 are shown escaped (``\\xff``), as everywhere else.
    """
    return sources.display_name(os.path.splitext(os.path.basename(name))[0])


def _sort_key(image_id: str):
    # Kaggle ids are integers: 2 before 10. Any other stems come after, alphabetically.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def _prepare(item: sources.SourceImage, settings: RecordSettings):
    """Thread worker: ``(PreparedImage, None)`` or ``(None, reason)``; never raises."""
    try:
        data = item.read()
    except OSError as e:
        return None, f"unreadable: {e}"
    try:
        return images_lib.prepare(data, settings.max_short_side, settings.jpeg_quality), None
    except images_lib.BadImage as e:
        return None, str(e)


def _ordered_map(fn: Callable, items: Sequence, num_threads: int) -> Iterator:
    """``map(fn, items)`` on a thread pool, in order, with a bounded number in flight.

    Threads, not processes: Pillow releases the GIL while it decodes, resizes and
    encodes, and TensorFlow is already running in this process (no fork after that).
    The window keeps memory flat however many files there are.
    """
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * num_threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def image_dataset(
    items: Sequence[sources.SourceImage],
    settings: RecordSettings,
    image_size: Sequence[int],
    bad_images: dict[int, str],
    num_threads: int | None = None,
) -> tf.data.Dataset:
    """``(index, uint8 image)`` per item that prepares, exactly as validation decodes it.

    Args:
      items: The images.
      settings: How the training records stored images (``record_settings``).
      image_size: The model's (height, width).
      bad_images: Filled with ``index -> reason`` for every item that cannot be read or
        prepared, as the dataset is iterated (those items yield nothing).
      num_threads: Threads preparing images (default: one per core).

    Returns:
      An unbatched dataset, in item order.
    """
    image_size = decode.size_pair(image_size)
    # The eval pipeline's cap: with records at --max_short_side the DCT ratio is known.
    max_ratio = decode.max_useful_ratio(settings.max_short_side, image_size)
    num_threads = num_threads or os.cpu_count() or 1

    def prepared():
        results = _ordered_map(lambda item: _prepare(item, settings), items, num_threads)
        for index, (image, reason) in enumerate(results):
            if image is None:
                bad_images[index] = reason
                continue
            yield index, image.encoded, image.height, image.width

    return tf.data.Dataset.from_generator(
        prepared,
        output_signature=(
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.string),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.int64),
        ),
    ).map(
        lambda index, encoded, height, width: (
            index,
            decode.decode_and_resize(encoded, image_size, height, width, max_ratio),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _tf_decode_error(item: sources.SourceImage, settings: RecordSettings) -> str:
    """Why an image that Pillow prepared still failed TensorFlow's decode (rare)."""
    image, reason = _prepare(item, settings)
    if image is None:
        return reason
    try:
        tf.io.decode_jpeg(image.encoded, channels=3)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        return f"TensorFlow cannot decode the prepared JPEG: {e.message.strip()}"
    return "cannot decode (failed in the batched pipeline)"


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
) -> dict:
    """Writes the submission CSV and its two sidecars; returns a summary.

    Args:
      model_path: A ``.keras`` model saved by ``train``.
      input_path: Folder or ``.zip`` of images.
      output_csv: The submission to write; ``<stem>.bad_images.json`` and
        ``<stem>.ignored.json`` are written beside it.
      batch_size: Images per model call.
      bad_image_label: The label of images that cannot be read or prepared.
      records_dir: The records the model was trained on (see ``record_settings``).
      tta: Test-time augmentation, one of ``trainer.tta.TTA_MODES``.

    Raises:
      FileNotFoundError: Missing model, input, or training records' manifest.
      ValueError: No images in the input, not a loadable model, or an unknown ``tta``.
    """
    tta_lib.check_mode(tta)  # Before the slow model load.
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"--input={input_path}: no such folder or zip")
    listing = unlabelled.list_unlabelled(input_path)  # InputError is a ValueError
    items = listing.images
    model = model_lib.load_model(model_path)
    settings = record_settings(model_path, records_dir)
    image_size = tuple(model.input_shape[1:3])
    logging.info(
        "predict: %d images (%d other files ignored), prepared like the training records "
        "(max_short_side %s, jpeg_quality %d, from %s), decoded at %s, tta=%s",
        len(items),
        len(listing.ignored),
        settings.max_short_side,
        settings.jpeg_quality,
        settings.source,
        image_size,
        tta,
    )
    bad: dict[int, str] = {}
    data = (
        image_dataset(items, settings, image_size, bad)
        # Pillow already decoded every image that gets here; a JPEG TensorFlow still
        # refuses is dropped, and found below (its index never comes out) and reported.
        .ignore_errors()
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    probabilities: dict[int, float] = {}
    for indices, batch in data:
        prob_dog = model_lib.prob_dog(tta_lib.predict_batch(model, batch, tta))
        probabilities.update(zip(indices.numpy().tolist(), prob_dog.tolist()))
    for index in range(len(items)):
        if index not in probabilities and index not in bad:
            bad[index] = _tf_decode_error(items[index], settings)

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
    }
    logging.info("predict: %s", summary)
    return summary
