"""Each frozen-network pass with --engine=keras and --engine=litert, against this CPU's peak.

    .venv/bin/python scripts/benchmark_engines.py --model=<Lite0 224 model.keras> \
        --records_dir=<records, max_short_side 256> --photos=<the original JPEGs> \
        --output=build/benchmark_engines.json

For one trained model (its base is the frozen network) and one records directory:

1. **Passes**, keras and litert taking turns (A B A B, ``--rounds`` each), so a change in
   the machine's load hits both: ``features`` (``train --input_mode=features``: train +
   val through ``features.compute``), ``audit`` (the audit's base pass over every labelled
   record, ``trainer.audit.features.extract``), ``evaluate`` (``--split``) and ``predict``
   (the original photos of that split, read from ``--photos`` by their stored names; with
   ``litert_int8`` too). Each pass's images/s is end to end (reading, decoding, the network
   and the rest); the flatbuffers are converted once before the rounds (the conversion's
   seconds are reported apart: a cached flatbuffer costs nothing).
2. **GFLOP/s**: 2 x the network's multiply-adds per image (``benchmarks.flops``) x
   images/s, and its share of the dense float32 matmul peak measured in the same run
   (the best of numpy's and TensorFlow's, before and after the passes).
3. **Where the time goes** (the features pass's chain): the decode alone (the records
   through ``eval_dataset``, no network), the network alone on batches held in memory,
   the head alone on pooled features; the rest of a pass is Python and contention.
4. **Threads**: the val split's pass on keras and on LiteRT with 2 threads or 1, each
   with tf.data's default threads, a private pool of 1 and intra-op parallelism 1 for
   the decode, every cell taking its turn each round. TensorFlow's own intra- and
   inter-op thread counts need a process per setting: ``scripts/benchmark_tf_threads.py``.

Each pass records the 1-minute load average before and after it, and how many cores its
process kept busy with the machine's busy, idle and stolen shares (``timing.CpuMeter``):
a pass that slows while its process keeps fewer cores busy was waiting, not crowded out.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from benchmarks import flops, timing
from benchmarks import report as report_lib
from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer.audit import features as audit_features
from trainer.inference import evaluation, prediction
from trainer.models import engine as engine_lib
from trainer.models import files as model_files
from trainer.models import model as model_lib
from trainer.training import features

flags.DEFINE_string("model", None, "A trained .keras model (EfficientNet-Lite0 at 224 px).")
flags.DEFINE_string("records_dir", None, "Records the model was trained on.")
flags.DEFINE_string("photos", None, "Folder of the original photos (the records' sources).")
flags.DEFINE_string("split", "test", "Split of evaluate and predict.")
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("rounds", 2, "Turns per engine.")
flags.DEFINE_list("passes", ["features", "audit", "evaluate", "predict"], "Passes to time.")
flags.DEFINE_bool("breakdown", True, "Time decode, network and head alone, and the threads.")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.mark_flags_as_required(["model", "records_dir"])
FLAGS = flags.FLAGS

ENGINES = ("keras", "litert")


def _load() -> float:
    return round(timing.machine_load()[0], 2)


def _features_pass(model, manifest, engine, cache_dir):
    cache = features.compute(model, manifest, FLAGS.batch_size, engine=engine, cache_dir=cache_dir)
    return len(cache.train.labels) + len(cache.val.labels), cache.seconds


def _audit_pass(extractor, manifest, engine, cache_dir):
    start = time.perf_counter()
    found = audit_features.extract(
        manifest, extractor, FLAGS.batch_size, progress=False, engine=engine, cache_dir=cache_dir
    )
    return len(found), time.perf_counter() - start


def _evaluate_pass(model_path, engine):
    result = evaluation.evaluate(
        model_path, FLAGS.records_dir, FLAGS.split, FLAGS.batch_size, num_mistakes=0, engine=engine
    )
    return result.metrics["num_examples"], result.metrics["seconds"]


def _photo_folder(manifest_split_names: list[str], folder: str) -> dict[str, int]:
    """Links the split's original photos into ``folder``; their labels by link name."""
    os.makedirs(folder, exist_ok=True)
    labels = {}
    for index, name in enumerate(manifest_split_names):
        link = f"{index}.jpg"
        # Absolute: the link lives in another folder, so a relative --photos would dangle.
        source = os.path.join(os.path.abspath(FLAGS.photos), os.path.basename(name))
        os.symlink(source, os.path.join(folder, link))
        labels[str(index)] = 1 if os.path.basename(name).startswith("dog") else 0
    return labels


def _predict_pass(model_path, folder, output, engine, labels):
    start = time.perf_counter()
    summary = prediction.predict(
        model_path, folder, output, FLAGS.batch_size, records_dir=FLAGS.records_dir, engine=engine
    )
    seconds = time.perf_counter() - start
    with open(output, encoding="utf-8") as f:
        rows = [line.strip().split(",") for line in f.readlines()[1:]]
    correct = [(float(p) > 0.5) == bool(labels[i]) for i, p in rows]
    return summary["predicted"], seconds, float(np.mean(correct))


def _network_alone(runner, batches) -> float:
    start = time.perf_counter()
    for batch in batches:
        runner.predict_on_batch(batch)
    return sum(map(len, batches)) / (time.perf_counter() - start)


def _decode_alone(manifest, image_size, threadpool: int | None = None) -> float:
    start, count = time.perf_counter(), 0
    for split in ("train", "val"):
        data = dataset_lib.eval_dataset(
            manifest, FLAGS.batch_size, split=split, image_size=image_size
        )
        data = _with_tf_data_threads(data, threadpool)
        for _, labels in data:
            count += len(labels)
    return count / (time.perf_counter() - start)


def _with_tf_data_threads(data, threadpool: int | None, intra_op: int | None = None):
    if threadpool is None and intra_op is None:
        return data
    options = tf.data.Options()
    if threadpool is not None:
        options.threading.private_threadpool_size = threadpool
    if intra_op is not None:
        options.threading.max_intra_op_parallelism = intra_op
    return data.with_options(options)


# tf.data's threading for the decode beside the network: (private pool, max intra-op).
_TF_DATA_THREADS = {
    "tf.data default": (None, None),
    "tf.data pool 1": (1, None),
    "tf.data intra-op 1": (None, 1),
}


def _val_pass(runner, manifest, image_size, pool=None, intra_op=None) -> float:
    """The val split's features pass through ``runner``: images/s, end to end."""
    start = time.perf_counter()
    data = dataset_lib.eval_dataset(manifest, FLAGS.batch_size, split="val", image_size=image_size)
    total = manifest.num_examples("val")
    features.extract(runner, _with_tf_data_threads(data, pool, intra_op), total, "val")
    return round(total / (time.perf_counter() - start), 1)


def _threads(extractor, manifest, cache_dir) -> list[dict]:
    """The val split's pass on keras, LiteRT on 2 threads and on 1, each with tf.data's
    default threads, a private pool of 1 and intra-op parallelism 1, every cell taking
    its turn each round (so a change in the machine's load hits all of them)."""
    content = engine_lib.cached_flatbuffer(extractor, cache_dir)
    image_size = model_lib.input_size(extractor)
    runners = {
        "keras": engine_lib.KerasRunner(extractor),
        "litert, 2 threads": engine_lib.LiteRTRunner(content, 2),
        "litert, 1 thread": engine_lib.LiteRTRunner(content, 1),
    }
    rows = []
    for _ in range(FLAGS.rounds):
        for name, runner in runners.items():
            for data_threads, (pool, intra_op) in _TF_DATA_THREADS.items():
                before, meter = _load(), timing.CpuMeter()
                rate = _val_pass(runner, manifest, image_size, pool, intra_op)
                rows.append(
                    {
                        "runner": name,
                        "tf_data": data_threads,
                        "images_per_sec": rate,
                        "load": [before, _load()],
                        "cpu": meter.read(),
                    }
                )
                logging.info("threads: %s", rows[-1])
    return rows


def _breakdown(model, extractor, manifest, cache_dir) -> dict:
    image_size = model_lib.input_size(model)
    batches = [
        images.numpy()
        for images, _ in dataset_lib.eval_dataset(
            manifest, FLAGS.batch_size, split="val", image_size=image_size
        ).take(5)
    ]
    runners = {e: engine_lib.runner(extractor, e, 1, cache_dir) for e in ENGINES}
    for runner in runners.values():
        runner.predict_on_batch(batches[0])  # warm-up
    network = {e: [] for e in ENGINES}
    for _ in range(FLAGS.rounds):
        for e in ENGINES:
            network[e].append(_network_alone(runners[e], batches))
    # Images per LiteRT invocation (engine.CHUNK), network alone, taking turns.
    content = engine_lib.cached_flatbuffer(extractor, cache_dir)
    chunked = {c: engine_lib.LiteRTRunner(content, chunk=c) for c in (1, 4, 16, 64)}
    by_chunk = {c: [] for c in chunked}
    for _ in range(FLAGS.rounds):
        for c, runner in chunked.items():
            by_chunk[c].append(_network_alone(runner, batches))
    pooled = runners["litert"].predict_on_batch(np.concatenate(batches))
    head = features.head_model(model)
    head.predict_on_batch(pooled[: FLAGS.batch_size])
    start = time.perf_counter()
    for row in range(0, len(pooled), FLAGS.batch_size):
        head.predict_on_batch(pooled[row : row + FLAGS.batch_size])
    head_rate = len(pooled) / (time.perf_counter() - start)
    return {
        "network_alone_images_per_sec": {e: round(max(v), 1) for e, v in network.items()},
        "litert_chunk_images_per_sec": {c: round(max(v), 1) for c, v in by_chunk.items()},
        "decode_alone_images_per_sec": round(_decode_alone(manifest, image_size), 1),
        "decode_alone_1_thread_images_per_sec": round(_decode_alone(manifest, image_size, 1), 1),
        "head_alone_images_per_sec": round(head_rate, 1),
        "threads": _threads(extractor, manifest, cache_dir),
    }


def main(argv):
    del argv
    manifest = Manifest.load(FLAGS.records_dir)
    model = model_lib.load_model(FLAGS.model)
    extractor = features.feature_model(model)
    work = tempfile.mkdtemp(prefix="benchmark_engines_")
    report = {
        "cores": timing.cores(),
        "model": FLAGS.model,
        "image_size": model_lib.input_size(model),
        "multiply_adds_per_image": flops.multiply_adds(model),
        "load_start": _load(),
    }
    # The conversions, timed once (every pass then finds its flatbuffer cached).
    conversions = {}
    for name, network, cache_dir in (
        ("base", extractor, work),
        ("model", model, os.path.dirname(os.path.abspath(FLAGS.model))),
    ):
        for stale in [f for f in os.listdir(cache_dir) if f.startswith("litert_float32_")]:
            os.remove(os.path.join(cache_dir, stale))
        start = time.perf_counter()
        engine_lib.cached_flatbuffer(network, cache_dir)
        conversions[name] = round(time.perf_counter() - start, 1)
    report["conversion_seconds"] = conversions
    report["matmul_peak_gflops_before"] = flops.matmul_peak_gflops()

    engines = {name: ENGINES for name in FLAGS.passes}
    labels = {}
    if "predict" in FLAGS.passes:
        names = evaluation.evaluate(
            FLAGS.model, FLAGS.records_dir, FLAGS.split, FLAGS.batch_size, num_mistakes=0
        ).filenames
        labels = _photo_folder(names, os.path.join(work, "photos"))
        engines["predict"] = (*ENGINES, engine_lib.INT8)
        model_dir = os.path.dirname(os.path.abspath(FLAGS.model))
        for stale in [f for f in os.listdir(model_dir) if f.startswith("litert_int8_")]:
            os.remove(os.path.join(model_dir, stale))
        start = time.perf_counter()
        prediction.int8_runner(
            model, model_files.trained_on(FLAGS.model, FLAGS.records_dir), model_dir
        )
        conversions["int8_with_calibration"] = round(time.perf_counter() - start, 1)
    runs = {name: {e: [] for e in engines[name]} for name in FLAGS.passes}
    for round_index in range(FLAGS.rounds):
        for name in FLAGS.passes:
            for engine in engines[name]:
                before, meter = _load(), timing.CpuMeter()
                accuracy = None
                if name == "features":
                    count, seconds = _features_pass(model, manifest, engine, work)
                elif name == "audit":
                    count, seconds = _audit_pass(extractor, manifest, engine, work)
                elif name == "evaluate":
                    count, seconds = _evaluate_pass(FLAGS.model, engine)
                else:
                    output = os.path.join(work, f"predict_{engine}.csv")
                    count, seconds, accuracy = _predict_pass(
                        FLAGS.model, os.path.join(work, "photos"), output, engine, labels
                    )
                runs[name][engine].append(
                    {
                        "images": count,
                        "images_per_sec": round(count / seconds, 1),
                        "accuracy": accuracy,
                        "load": [before, _load()],
                        "cpu": meter.read(),
                    }
                )
                logging.info(
                    "round %d %s %s: %s", round_index, name, engine, runs[name][engine][-1]
                )
    report["matmul_peak_gflops_after"] = flops.matmul_peak_gflops()
    peak = max(
        *report["matmul_peak_gflops_before"].values(),
        *report["matmul_peak_gflops_after"].values(),
    )
    report["matmul_peak_gflops"] = peak
    gflop_per_image = 2 * report["multiply_adds_per_image"] / 1e9
    table = []
    for name, by_engine in runs.items():
        rates = {e: statistics.median(r["images_per_sec"] for r in v) for e, v in by_engine.items()}
        for engine, rate in rates.items():
            table.append(
                {
                    "pass": name,
                    "engine": engine,
                    "images_per_sec": rate,
                    "x_keras": round(rate / rates["keras"], 2),
                    "gflops": round(rate * gflop_per_image, 1),
                    "share_of_peak": round(rate * gflop_per_image / peak, 3),
                    "accuracy": by_engine[engine][-1]["accuracy"],
                }
            )
    report.update(table=table, runs=runs)
    if FLAGS.breakdown:
        report["breakdown"] = _breakdown(model, extractor, manifest, work)
        alone = report["breakdown"]["network_alone_images_per_sec"]
        report["breakdown"]["network_alone_share_of_peak"] = {
            e: round(rate * gflop_per_image / peak, 3) for e, rate in alone.items()
        }
    report["load_end"] = _load()
    print(json.dumps(report, indent=2))
    if FLAGS.output:
        report_lib.write_json(report, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
