"""Forward-pass speed of the EfficientNet-Lite backbones, and Lite0 under mixed_bfloat16.

Two tables, each from models built here with random weights (speed does not depend on
the values) and fed random uint8 images:

1. The frozen forward pass (backbone preprocessing, base, average pooling;
   ``model.predict_on_batch``) of every ``--backbones`` entry at its native size
   (``Backbone.native_size``, else --default_size), float32.
2. EfficientNet-Lite0 at its native size in float32 and in ``mixed_bfloat16``: the same
   frozen forward pass, and one training step of the whole base plus a dense head
   (``model.train_on_batch``, batch --train_batch_size, SGD with momentum, no XLA: Keras'
   "auto" turns it off on a CPU). Each model is built after its policy is set, as
   ``train --precision`` does.

Every model gets one untimed warm-up batch (tracing); then the models of a table take
turns, one batch each, for --num_batches rounds, so a change in the machine's load hits
all of them alike. Reported per model: images/s of the median batch by wall clock, and
CPU seconds per image (this process's threads only: steadier on a shared machine), with
the 1-minute load average before and after.

    .venv/bin/python scripts/benchmark_backbones.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
from absl import app, flags

from benchmarks import timing
from trainer.models import backbones

flags.DEFINE_list(
    "backbones",
    ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    "Backbones of the first table.",
)
flags.DEFINE_integer("default_size", 224, "Image size of a backbone without a native size.")
flags.DEFINE_integer("batch_size", 64, "Images per forward batch.")
flags.DEFINE_integer("train_batch_size", 32, "Images per training step.")
flags.DEFINE_integer("num_batches", 5, "Timed batches per model (after one warm-up).")
flags.DEFINE_string("precision_backbone", "efficientnet_lite0", "Backbone of the second table.")
flags.DEFINE_list("policies", ["float32", "mixed_bfloat16"], "Policies of the second table.")
flags.DEFINE_integer("seed", 0, "Seed of the random images and labels.")
FLAGS = flags.FLAGS

# One timed unit of work: runs one batch.
Step = Callable[[], None]


def image_size(name: str) -> int:
    """The backbone's native size, or --default_size."""
    return backbones.get(name).native_size or FLAGS.default_size


def frozen_features(name: str, size: int) -> keras.Model:
    """Raw RGB 0..255 -> pooled features: what ``--input_mode=features`` and the audit run."""
    spec = backbones.get(name)
    base = spec.build((size, size, 3))
    # Frozen and called with training=False: batch norm uses its moving statistics, as a
    # pretrained base does in phase one.
    base.trainable = False
    inputs = keras.Input((size, size, 3), name="image")
    x = spec.preprocess(f"{name}_preprocess")(inputs)
    x = base(x, training=False)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=f"{name}_features")


def trainable_classifier(name: str, size: int) -> keras.Model:
    """The whole base trainable, with a 2-way dense head: the fine-tune-everything step."""
    spec = backbones.get(name)
    inputs = keras.Input((size, size, 3), name="image")
    x = spec.preprocess(f"{name}_preprocess")(inputs)
    x = spec.build((size, size, 3))(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # float32 softmax: the loss of a mixed-precision model is computed in float32.
    outputs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"{name}_classifier")
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    return model


def random_images(rng: np.random.Generator, batch_size: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)


def forward_step(model: keras.Model, images: np.ndarray) -> Step:
    return lambda: model.predict_on_batch(images)


def train_step(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> Step:
    return lambda: model.train_on_batch(images, labels)


def time_in_turns(steps: dict[str, tuple[Step, int]], num_batches: int) -> dict[str, dict]:
    """Warms every step up once, then runs them in turns, ``num_batches`` rounds.

    Args:
      steps: Row name -> (the step, images per step).
      num_batches: Timed batches per step.

    Returns:
      Row name -> images/s of the median batch, CPU seconds per image (median), and the
      wall seconds of every batch.
    """
    for step, _ in steps.values():
        step()
    walls = {name: [] for name in steps}
    cpus = {name: [] for name in steps}
    for _ in range(num_batches):
        for name, (step, _) in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - cpu_start)
    return {
        name: {
            "images_per_s": images / statistics.median(walls[name]),
            "cpu_ms_per_image": 1000 * statistics.median(cpus[name]) / images,
            "batch_seconds": walls[name],
        }
        for name, (_, images) in steps.items()
    }


def print_table(title: str, rows: dict[str, dict], load_before: list, load_after: list) -> None:
    print(f"\n{title}")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    width = max(len(name) for name in rows)
    print(f"{'':{width}} {'images/s':>9} {'CPU ms/image':>13}  batch seconds")
    for name, row in rows.items():
        seconds = " ".join(f"{s:.2f}" for s in row["batch_seconds"])
        print(
            f"{name:{width}} {row['images_per_s']:9.1f} {row['cpu_ms_per_image']:13.1f}  {seconds}"
        )


def main(argv) -> None:
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    print(f"{timing.cores()} cores; keras {keras.__version__}, backend {keras.backend.backend()}")

    keras.mixed_precision.set_global_policy("float32")
    steps = {}
    for name in FLAGS.backbones:
        size = image_size(name)
        images = random_images(rng, FLAGS.batch_size, size)
        steps[f"{name} @{size} frozen forward float32"] = (
            forward_step(frozen_features(name, size), images),
            FLAGS.batch_size,
        )
    load_before = timing.machine_load()
    rows = time_in_turns(steps, FLAGS.num_batches)
    print_table(
        f"Frozen forward pass, batch {FLAGS.batch_size}", rows, load_before, timing.machine_load()
    )

    name = FLAGS.precision_backbone
    size = image_size(name)
    images = random_images(rng, FLAGS.batch_size, size)
    train_images = random_images(rng, FLAGS.train_batch_size, size)
    labels = rng.integers(0, 2, FLAGS.train_batch_size)
    steps = {}
    for policy in FLAGS.policies:
        # A layer takes the global policy when it is made: set it, then build.
        keras.mixed_precision.set_global_policy(policy)
        steps[f"{name} @{size} frozen forward {policy}"] = (
            forward_step(frozen_features(name, size), images),
            FLAGS.batch_size,
        )
        steps[f"{name} @{size} train step {policy}"] = (
            train_step(trainable_classifier(name, size), train_images, labels),
            FLAGS.train_batch_size,
        )
    keras.mixed_precision.set_global_policy("float32")
    load_before = timing.machine_load()
    rows = time_in_turns(steps, FLAGS.num_batches)
    print_table(
        f"Precision: forward batch {FLAGS.batch_size}, train batch {FLAGS.train_batch_size}",
        rows,
        load_before,
        timing.machine_load(),
    )


if __name__ == "__main__":
    app.run(main)
