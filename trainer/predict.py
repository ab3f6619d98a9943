r"""Predicts P(dog) for a folder or zip of unlabelled images: a Kaggle submission CSV.

  predict --model=build/model/model.keras --input=test1.zip --output=build/submission.csv

The CSV is `id,label` (id = the file name's stem, e.g. 17 for 17.jpg, sorted numerically;
label = probability of dog). Images that cannot be read or decoded do not stop the run:
they are logged, listed with the reason in <output stem>.bad_images.json, and get
label --bad_image_label (0.5, the least costly guess under log loss) so the submission
still has a row for every input.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys

import numpy as np
from absl import app, flags, logging

from records import cli

FLAGS = flags.FLAGS


def submission_id(name: str) -> str:
    """`test1/17.jpg` -> `17`: the file name without folders and extension."""
    return os.path.splitext(os.path.basename(name))[0]


def _sort_key(image_id: str):
    # Kaggle ids are integers: 2 before 10. Any other stems come after, alphabetically.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def _decode_error(encoded: bytes, image_size) -> str:
    """Why `encoded` does not decode (run eagerly, only for the images that failed)."""
    import tensorflow as tf

    from pipeline import decode

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
    import tensorflow as tf

    from pipeline import decode
    from records import sources
    from trainer import evaluate

    if not os.path.exists(input_path):
        raise FileNotFoundError(f"--input={input_path}: no such folder or zip")
    items = list(sources.iter_unlabelled(input_path))
    if not items:
        raise ValueError(f"--input={input_path}: no images found")
    model = evaluate.load_model(model_path)
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
        outputs = np.asarray(model.predict_on_batch(images))
        prob_dog = outputs[:, 1] if outputs.shape[-1] == 2 else outputs[:, 0]
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


def _define_flags() -> None:
    """Defined on demand, not at import: evaluate and predict are also libraries, and
    absl refuses two modules defining the same flag name in one process."""
    flags.DEFINE_string("model", None, "A .keras model saved by train.")
    flags.DEFINE_string("input", None, "Folder or .zip of images (e.g. Kaggle test1/).")
    flags.DEFINE_string("output", None, "Submission CSV to write.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_float("bad_image_label", 0.5, "Label written for images that cannot be decoded.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in ("model", "input", "output"):
        if not FLAGS[flag].value:
            raise app.UsageError(f"--{flag} is required")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size} must be >= 1")
    if not 0 <= FLAGS.bad_image_label <= 1:
        raise app.UsageError(f"--bad_image_label={FLAGS.bad_image_label} must be in [0, 1]")
    logging.info("predicting %s with %s -> %s", FLAGS.input, FLAGS.model, FLAGS.output)
    try:
        summary = predict(
            FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.batch_size, FLAGS.bad_image_label
        )
    except (ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"predict: error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary['output']}: {summary['predicted']} of {summary['images']} images "
        f"predicted, {summary['bad_images']} bad (listed in {summary['bad_images_file']})"
    )
    return 0


def run() -> None:
    cli.run(main, __name__, _define_flags)


if __name__ == "__main__":
    run()
