"""P(dog) for a folder or zip of unlabelled images: a Kaggle submission (the `predict` library).

The CSV is `id,label` (id = the file name's stem, sorted numerically; label = P(dog)).
Images that cannot be read or decoded never stop the run: they are listed with the
reason in `<output stem>.bad_images.json` and get `bad_image_label`, so the submission
still has a row for every input.
"""

from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from pipeline import decode
from records import sources
from trainer import model as model_lib


def submission_id(name: str) -> str:
    """`test1/17.jpg` -> `17`: the file name without folders and extension."""
    return os.path.splitext(os.path.basename(name))[0]


def _sort_key(image_id: str):
    # Kaggle ids are integers: 2 before 10. Any other stems come after, alphabetically.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def _decode_error(encoded: bytes, image_size) -> str:
    """Why `encoded` does not decode (run eagerly, only for the images that failed)."""
    try:
        decode.decode_image_any(tf.constant(encoded), image_size)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as e:
        message = getattr(e, "message", str(e))
        # Eager op errors wrap the decoder's sentence in "{{function_node ...}}" and
        # "[Op:DecodeImage] name:"; keep the sentence, which is what a user can act on.
        message = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:\w+\].*$", "", message)
        return f"cannot decode: {message.strip()}"
    return "cannot decode (failed in the batched pipeline)"


def predict(
    model_path: str,
    input_path: str,
    output_csv: str,
    batch_size: int = 64,
    bad_image_label: float = 0.5,
) -> dict:
    """Writes the submission CSV and the bad-images sidecar; returns a summary.

    Raises:
      FileNotFoundError, ValueError: Missing model or input, or no images in the input.
    """
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"--input={input_path}: no such folder or zip")
    items = list(sources.iter_unlabelled(input_path))
    if not items:
        raise ValueError(f"--input={input_path}: no images found")
    model = model_lib.load_model(model_path)
    image_size = tuple(model.input_shape[1:3])
    bad: dict[int, str] = {}

    def read_all():
        for index, item in enumerate(items):
            try:
                encoded = item.read()
            except OSError as e:
                bad[index] = f"cannot read: {e}"
                continue
            yield index, encoded

    data = (
        tf.data.Dataset.from_generator(
            read_all,
            output_signature=(
                tf.TensorSpec([], tf.int64),
                tf.TensorSpec([], tf.string),
            ),
        )
        .map(
            lambda index, encoded: (index, decode.decode_image_any(encoded, image_size)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        # Undecodable images are dropped here, but not lost: every index that does not
        # come out is found below, and its error is recomputed and reported.
        .ignore_errors()
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    probabilities: dict[int, float] = {}
    for indices, images in data:
        prob_dog = model_lib.prob_dog(np.asarray(model.predict_on_batch(images)))
        probabilities.update(zip(indices.numpy().tolist(), prob_dog.tolist()))
    for index in range(len(items)):
        if index not in probabilities and index not in bad:
            bad[index] = _decode_error(items[index].read(), image_size)

    rows = []
    for index, item in enumerate(items):
        label = probabilities.get(index, bad_image_label)
        rows.append((submission_id(item.name), label))
    rows.sort(key=lambda row: _sort_key(row[0]))
    ids = [row[0] for row in rows]
    if len(set(ids)) != len(ids):
        logging.warning("some file names share an id (e.g. 1.jpg and 1.png): the CSV repeats ids")
    os.makedirs(os.path.dirname(os.path.abspath(output_csv)), exist_ok=True)
    with open(output_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows((image_id, f"{label:.6f}") for image_id, label in rows)
    bad_list = [
        {"name": items[index].name, "id": submission_id(items[index].name), "reason": reason}
        for index, reason in sorted(bad.items())
    ]
    bad_path = os.path.splitext(output_csv)[0] + ".bad_images.json"
    with open(bad_path, "w") as f:
        json.dump(bad_list, f, indent=2)
    for entry in bad_list:
        logging.warning(
            "bad image %s: %s (label %s written)", entry["name"], entry["reason"], bad_image_label
        )
    summary = {
        "images": len(items),
        "predicted": len(probabilities),
        "bad_images": len(bad_list),
        "output": output_csv,
        "bad_images_file": bad_path,
    }
    logging.info("predict: %s", summary)
    return summary
