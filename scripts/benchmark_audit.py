"""The data audit end to end on a 25,000-image folder built from the sample.

The folder holds every sample photo and, until it reaches --num_images, near-copies of
them (``benchmarks.near_copies.TRANSFORMS`` in turn: re-encoded, resized, mirrored,
cropped), which is the size of the full Kaggle training set and a hard case for the
duplicate report (every photo has about three near-copies). Then, each timed with the
load average before and after:

1. ``make_records`` of the folder (full size, as stored by default);
2. ``audit_data`` at --image_size (224), a fresh output folder (no feature cache).

    .venv/bin/python scripts/benchmark_audit.py --output=build/benchmark_audit.json

Writes the figures as JSON and prints them; the folder and records stay in --work_dir
(delete it afterwards: about 1 GB).
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import shutil
import sys
import time

from absl import app, flags

from benchmarks import near_copies, timing

flags.DEFINE_string("input", "../shared/data/dogs-vs-cats/train", "The sample's photos.")
flags.DEFINE_integer("num_images", 25_000, "Images in the built folder.")
flags.DEFINE_integer("image_size", 224, "audit_data --image_size.")
flags.DEFINE_string("work_dir", "build/benchmark_audit", "Folder, records and audit go here.")
flags.DEFINE_string("output", "build/benchmark_audit.json", "Where the figures go.")
FLAGS = flags.FLAGS


def build_folder(source: str, destination: str, num_images: int) -> int:
    """Links the sample into ``destination`` and adds near-copies up to ``num_images``."""
    os.makedirs(destination, exist_ok=True)
    names = sorted(n for n in os.listdir(source) if n.lower().endswith(".jpg"))
    for name in names:
        os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(destination, name))
    transforms = list(near_copies.TRANSFORMS)
    jobs = []
    for index in range(num_images - len(names)):
        name = names[index % len(names)]
        transform = transforms[(index // len(names)) % len(transforms)]
        copy = f"{name[: -len('.jpg')]}.{transform}.jpg"
        jobs.append((os.path.join(source, name), os.path.join(destination, copy), transform))
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(near_copies.plant_copy, *zip(*jobs), chunksize=64))
    return len(names) + len(jobs)


def main(argv) -> None:
    del argv
    shutil.rmtree(FLAGS.work_dir, ignore_errors=True)
    folder = os.path.join(FLAGS.work_dir, "train")
    start = time.perf_counter()
    count = build_folder(FLAGS.input, folder, FLAGS.num_images)
    print(f"built {folder}: {count} images in {time.perf_counter() - start:.0f} s")
    bin_dir = os.path.dirname(sys.executable)
    records = os.path.join(FLAGS.work_dir, "records")
    audit = os.path.join(FLAGS.work_dir, "audit")
    figures = {"images": count, "cpus": os.cpu_count()}
    figures["make_records"] = timing.timed_command(
        [os.path.join(bin_dir, "make_records"), f"--input={folder}", f"--output_dir={records}"]
    )
    figures["audit_data"] = timing.timed_command(
        [
            os.path.join(bin_dir, "audit_data"),
            f"--records_dir={records}",
            f"--output_dir={audit}",
            f"--image_size={FLAGS.image_size}",
        ]
    )
    with open(os.path.join(audit, "data_issues.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    flagged = [k for r in rows for k in r["flagged"].split(";") if k]
    figures["audited"] = len(rows)
    figures["flagged"] = {kind: flagged.count(kind) for kind in sorted(set(flagged))}
    for step in ("make_records", "audit_data"):
        figures[step]["images_per_second"] = round(len(rows) / figures[step]["seconds"], 1)
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(figures, f, indent=2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    app.run(main)
