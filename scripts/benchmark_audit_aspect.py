r"""Does the data audit pair a photo with a copy of it squashed or stretched to another aspect?

Builds a folder of every sample photo plus ``--num_copies`` of them (chosen by --seed),
each resized to another aspect ratio (``ASPECTS`` in turn, one its photo is not close to
already: a 4:3 photo squashed to 1:1, a square one stretched to 3:2, ...) and to a size
(``LONG_SIDES`` in turn: the area kept, or a long side of 224, 128, 64 or 150 px),
re-encoded as JPEG at quality 90 with TensorFlow ops. Then ``make_records`` and
``audit_data`` (defaults) run on it, and ``duplicates.csv`` is sorted into:

* planted: a copy paired with its own original (the aim: all of them);
* known: a pair of the sample's own near-duplicates (``KNOWN_PAIRS``), a copy standing
  in for its original;
* other: every other pair: false pairs (the aim: no more than before the change).

    nice -n 10 .venv/bin/python scripts/benchmark_audit_aspect.py \
        --output=build/benchmark_audit_aspect.json

The folder, records and audit stay in --work_dir (in /tmp; about 150 MB of records, the
photos are linked). A rerun into the same --work_dir rebuilds the same copies and the
same records (JPEG encodes and records are deterministic), so ``audit_data`` reuses its
feature cache where the audit's features are unchanged. The similarities per signal (the
planted pairs', and the closest pair of distinct photos) come from that cache.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import random
import shutil
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import timing
from trainer.audit import neighbours

flags.DEFINE_string("input", "../shared/data/dogs-vs-cats/train", "The sample's photos.")
flags.DEFINE_integer("num_copies", 40, "Photos planted again at another aspect ratio.")
flags.DEFINE_integer("seed", 0, "Chooses the photos to copy.")
flags.DEFINE_string(
    "work_dir", "/tmp/benchmark_audit_aspect", "Folder, records and audit go here (not ../shared)."
)
flags.DEFINE_string("output", "build/benchmark_audit_aspect.json", "Where the figures go.")
FLAGS = flags.FLAGS

# Width:height of the copies, in turn. Published copies of this set are mostly squashed
# to a square; the others stretch both ways.
ASPECTS = ((1, 1), (3, 2), (2, 3), (4, 3), (3, 4), (16, 9), (9, 16), (2, 1))
# A target this close to the photo's own aspect (|log ratio| below it) is skipped: the
# copy would barely change shape.
MIN_ASPECT_CHANGE = math.log(1.2)
# The long side of the copies, in turn (None: the area of the photo kept). Published
# copies are mostly small (64-256 px squares); 8 aspects x 5 sizes give 40 combinations.
LONG_SIDES = (None, 224, 128, 64, 150)
JPEG_QUALITY = 90
# The sample's own near-duplicates, as docs/evaluating.md lists them (dog.3082 is a
# byte copy of dog.2027 that make_records drops, so it never reaches the audit).
KNOWN_PAIRS = frozenset(
    {frozenset({"dog.74.jpg", "dog.180.jpg"}), frozenset({"dog.980.jpg", "dog.1273.jpg"})}
)


def copy_size(height: int, width: int, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(aspect, (new height, new width)) of the ``index``-th copy of a ``height`` x ``width``
    photo: the next aspect of ``ASPECTS`` far enough from its own, at the ``index``-th
    size of ``LONG_SIDES``."""
    own = math.log(width / height)
    for step in range(len(ASPECTS)):
        aspect = ASPECTS[(index + step) % len(ASPECTS)]
        ratio = aspect[0] / aspect[1]
        if abs(math.log(ratio) - own) >= MIN_ASPECT_CHANGE:
            break
    long_side = LONG_SIDES[index % len(LONG_SIDES)]
    if long_side is None:
        long_side = math.sqrt(height * width * max(ratio, 1 / ratio))  # The area kept.
    if ratio >= 1:
        size = (long_side / ratio, long_side)
    else:
        size = (long_side, long_side * ratio)
    return aspect, (max(1, round(size[0])), max(1, round(size[1])))


def plant_copy(source: str, destination: str, index: int) -> str:
    """Writes the ``index``-th aspect copy of the JPEG at ``source``; returns its aspect."""
    image = tf.io.decode_jpeg(tf.io.read_file(source), channels=3)
    aspect, size = copy_size(int(image.shape[0]), int(image.shape[1]), index)
    # antialias: a squash shrinks one axis; without it the copy would alias, not just reshape.
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
    pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    tf.io.write_file(destination, tf.io.encode_jpeg(pixels, quality=JPEG_QUALITY))
    return f"{aspect[0]}:{aspect[1]} {size[1]}x{size[0]}"


def build_folder(
    source_dir: str, destination: str, num_copies: int, seed: int
) -> dict[str, tuple[str, str]]:
    """Links every sample photo into ``destination`` and plants the aspect copies.

    Returns:
      copy file name -> (original file name, aspect of the copy).
    """
    shutil.rmtree(destination, ignore_errors=True)
    os.makedirs(destination)
    names = sorted(n for n in os.listdir(source_dir) if n.lower().endswith(".jpg"))
    for name in names:
        os.symlink(os.path.abspath(os.path.join(source_dir, name)), os.path.join(destination, name))
    planted = {}
    for index, name in enumerate(random.Random(seed).sample(names, num_copies)):
        copy = f"{name[: -len('.jpg')]}.aspect{index}.jpg"
        aspect = plant_copy(os.path.join(source_dir, name), os.path.join(destination, copy), index)
        planted[copy] = (name, aspect)
    return planted


def sort_pairs(pairs: list[tuple[str, str, float]], planted: dict[str, tuple[str, str]]) -> dict:
    """Splits the audit's pairs into planted, known (the sample's own) and other."""
    original = {copy: source for copy, (source, _) in planted.items()}
    found: dict[str, list] = {"planted": [], "known": [], "other": []}
    for a, b, similarity in pairs:
        if original.get(a) == b or original.get(b) == a:
            kind = "planted"
        elif frozenset({original.get(a, a), original.get(b, b)}) in KNOWN_PAIRS:
            kind = "known"
        else:
            kind = "other"
        found[kind].append([a, b, similarity])
    return found


def signals(audit_dir: str, planted: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """For each signal in the audit's cache (features; thumbnails where it has them): each
    planted copy's similarity with its original, and the closest pair that is neither
    planted nor known (the margin a threshold has on the sample)."""
    (cache,) = glob.glob(os.path.join(audit_dir, "features-*.npz"))
    with np.load(cache) as data:
        names = [os.path.basename(str(n)) for n in data["filenames"]]
        arrays = {name: data[name] for name in ("vectors", "thumbnails") if name in data}
    row = {name: i for i, name in enumerate(names)}
    out = {}
    for signal, values in arrays.items():
        unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
        near = neighbours.nearest(values, 3)
        candidates = [
            (names[i], names[int(j)], float(s))
            for i in range(len(names))
            for j, s in zip(near.index[i], near.similarity[i])
        ]
        others = sort_pairs(candidates, planted)["other"]
        out[signal] = {
            "planted": {
                copy: round(float(unit[row[copy]] @ unit[row[source]]), 4)
                for copy, (source, _) in planted.items()
            },
            "closest_other": max(others, key=lambda pair: pair[2]),
        }
    return out


def main(argv) -> None:
    del argv
    folder = os.path.join(FLAGS.work_dir, "train")
    planted = build_folder(FLAGS.input, folder, FLAGS.num_copies, FLAGS.seed)
    bin_dir = os.path.dirname(sys.executable)
    records = os.path.join(FLAGS.work_dir, "records")
    audit = os.path.join(FLAGS.work_dir, "audit")
    figures: dict = {"copies": len(planted), "seed": FLAGS.seed}
    figures["make_records"] = timing.timed_command(
        # --overwrite: another --seed or --num_copies plants other files into the same folder.
        [
            os.path.join(bin_dir, "make_records"),
            f"--input={folder}",
            f"--output_dir={records}",
            "--overwrite",
        ]
    )
    figures["audit_data"] = timing.timed_command(
        [os.path.join(bin_dir, "audit_data"), f"--records_dir={records}", f"--output_dir={audit}"]
    )
    with open(os.path.join(audit, "duplicates.csv"), newline="") as f:
        # The records name each photo by its path under --input's folder ("train/cat.1.jpg").
        pairs = [
            (os.path.basename(r["filename"]), os.path.basename(r["other"]), float(r["similarity"]))
            for r in csv.DictReader(f)
        ]
    found = sort_pairs(pairs, planted)
    paired = {name for a, b, _ in found["planted"] for name in (a, b)}
    by_signal = signals(audit, planted)
    similarity = by_signal["vectors"]["planted"]
    figures["pairs"] = {kind: len(rows) for kind, rows in found.items()}
    figures["planted_paired"] = f"{len(found['planted'])} of {len(planted)}"
    figures["missed"] = [
        [copy, source, aspect, similarity.get(copy)]
        for copy, (source, aspect) in sorted(planted.items())
        if copy not in paired
    ]
    for signal, found_by in by_signal.items():
        figures[signal] = {
            "planted_min": min(found_by["planted"].values()),
            "planted_max": max(found_by["planted"].values()),
            "closest_other": found_by["closest_other"],
        }
    figures["known"] = found["known"]
    figures["other"] = found["other"]
    figures["planted"] = [
        [copy, source, aspect, *(by_signal[signal]["planted"][copy] for signal in by_signal)]
        for copy, (source, aspect) in sorted(planted.items())
    ]
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(figures, f, indent=2)
    print(json.dumps({k: v for k, v in figures.items() if k != "planted"}, indent=2))


if __name__ == "__main__":
    app.run(main)
