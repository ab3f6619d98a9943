"""The val split's frozen-network pass under TensorFlow's intra/inter-op thread counts.

    .venv/bin/python scripts/benchmark_tf_threads.py --model=<Lite0 224 model.keras> \
        --records_dir=<records> --output=build/benchmark_tf_threads.json

Intra-op threads run Keras' kernels and a decode op's inner loops; inter-op threads run
tf.data's map and interleave (without a private pool). TensorFlow reads both once, before
its runtime starts, so each setting of ``--grid`` runs in a process of its own (this
script again, with ``--cell``), keras then litert, every setting each round. Each row
has images/s, the load, and the cores the process kept busy (``timing.CpuMeter``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from benchmarks import report as report_lib
from benchmarks import timing
from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer.models import engine as engine_lib
from trainer.models import model as model_lib
from trainer.training import features

flags.DEFINE_string("model", None, "A trained .keras model (its base is the frozen network).")
flags.DEFINE_string("records_dir", None, "Records with a val split.")
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("rounds", 2, "Turns per setting.")
flags.DEFINE_list(
    "grid", ["default", "1:1", "2:1", "1:2"], "intra:inter settings ('default': one per core)."
)
flags.DEFINE_string("cell", None, "Internal: run one setting in this process, print a JSON line.")
flags.DEFINE_string(
    "cache_dir", None, "Where the base's flatbuffer is cached (default: a temp dir)."
)
flags.DEFINE_string("output", None, "JSON file for the rows.")
flags.mark_flags_as_required(["model", "records_dir"])
FLAGS = flags.FLAGS


def _cell(setting: str) -> dict:
    if setting != "default":
        intra, inter = (int(n) for n in setting.split(":"))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    manifest = Manifest.load(FLAGS.records_dir)
    extractor = features.feature_model(model_lib.load_model(FLAGS.model))
    image_size = model_lib.input_size(extractor)
    total = manifest.num_examples("val")
    row = {"tf_threads": setting}
    for engine in ("keras", "litert"):
        runner = engine_lib.runner(extractor, engine, 1, FLAGS.cache_dir)
        runner.predict_on_batch(np.zeros((1, *image_size, 3), np.float32))  # warm-up
        load, meter, start = timing.machine_load()[:1], timing.CpuMeter(), time.perf_counter()
        data = dataset_lib.eval_dataset(
            manifest, FLAGS.batch_size, split="val", image_size=image_size
        )
        features.extract(runner, data, total, "val")
        row[engine] = {
            "images_per_sec": round(total / (time.perf_counter() - start), 1),
            "load": load + timing.machine_load()[:1],
            "cpu": meter.read(),
        }
    return row


def main(argv):
    del argv
    if FLAGS.cell:
        print(json.dumps(_cell(FLAGS.cell)))
        return
    cache_dir = FLAGS.cache_dir or tempfile.mkdtemp(prefix="benchmark_tf_threads_")
    rows = []
    for _ in range(FLAGS.rounds):
        for setting in FLAGS.grid:
            command = [
                sys.executable,
                os.path.abspath(__file__),
                f"--model={FLAGS.model}",
                f"--records_dir={FLAGS.records_dir}",
                f"--batch_size={FLAGS.batch_size}",
                f"--cache_dir={cache_dir}",
                f"--cell={setting}",
            ]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            logging.info("%s", rows[-1])
    print(json.dumps(rows, indent=2))
    if FLAGS.output:
        report_lib.write_json(rows, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
