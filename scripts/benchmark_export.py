r"""Val accuracy, file size and single-image CPU latency of an export_model folder, per format.

  PYTHONPATH=. python scripts/benchmark_export.py --model=build/model/model.keras \
      --export_dir=build/export --output=build/benchmark_export.json

Accuracy on the val split of the training records (metadata.json names them), each format
fed the way it is meant to be used:
  keras        trainer.inference.evaluation.evaluate (the `evaluate` command's library)
  saved_model  serving_default on the records' JPEG bytes (decoded inside the graph)
  tflite       uint8 images decoded by pipeline.dataset.eval_dataset, one per invocation
  originals    serving_default on the original photos the val records were made from
               (when the records came from a folder), prepared like make_records in the
               graph: the skew a client sending its own photos still sees
plus, per format, how many val predictions fall on the other side of the decision threshold than Keras' and
the largest |P(dog) difference|.

Latency: one val image, batch 1, median (and 90th percentile) of --runs calls after
--warmup, the formats called round-robin, in a fresh process per thread setting: 1
thread, then the runtime's default (TensorFlow: intra/inter-op pools sized by TF; TFLite:
num_threads unset). The SavedModel is timed from a record's JPEG bytes (decode included),
from uint8 images, and from one original photo (shrunk like make_records in the graph,
then decoded). The load average is recorded before and after each part: these machines
are shared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from core import settings
from trainer.inference import decision

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    model: str = setting(help="The .keras model that was exported.")
    export_dir: str = setting(help="The export_model --output_dir.")
    output: str | None = setting(None, "JSON file to write the figures to.")
    runs: int = setting(50, "Timed single-image calls per format and thread setting.", minimum=1)
    warmup: int = setting(5, "Untimed calls before timing.", minimum=0)
    latency_threads: int | None = setting(
        None, "Internal: time latency only, with this many threads (0 = default), print JSON."
    )

    def __post_init__(self):
        settings.check(self)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _val(metadata: dict):
    """(JPEG bytes, uint8 images, labels) of the val split, in evaluate's order."""
    import numpy as np

    from pipeline import dataset as dataset_lib
    from pipeline import shards
    from records.manifest import Manifest

    manifest = Manifest.load(metadata["records_dir"])
    split = manifest.split("val")
    encoded = [
        e.numpy()
        for e, _, _, _ in shards.read_examples(
            split.paths,
            split.counts,
            training=False,
            deterministic=True,
            seed=None,
            input_context=None,
        )
    ]
    size = (metadata["input"]["height"], metadata["input"]["width"])
    images, labels = [], []
    for x, y in dataset_lib.eval_dataset(manifest, 64, split="val", image_size=size):
        images.append(x.numpy())
        labels.append(y.numpy())
    return encoded, np.concatenate(images), np.concatenate(labels)


def _accuracy(config: BenchmarkConfig, metadata: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from trainer.inference import evaluation
    from trainer.models import model as model_lib
    from trainer.serving import export as export_lib
    from trainer.serving import tflite as tflite_lib

    encoded, images, labels = _val(metadata)
    results = {}
    started = time.perf_counter()
    evaluated = evaluation.evaluate(config.model, metadata["records_dir"], "val").metrics
    model = model_lib.load_model(config.model)
    keras_p = np.concatenate(
        [
            model_lib.prob_dog(model.predict_on_batch(images[i : i + 64]))
            for i in range(0, len(images), 64)
        ]
    )
    results["keras"] = {"accuracy": evaluated["accuracy"], "seconds": time.perf_counter() - started}

    started = time.perf_counter()
    serve = tf.saved_model.load(os.path.join(config.export_dir, export_lib.SAVED_MODEL_DIR))
    signature = serve.signatures[export_lib.BYTES_SIGNATURE]
    saved_p = np.concatenate(
        [
            signature(image_bytes=tf.constant(encoded[i : i + 64]))["p_dog"].numpy()
            for i in range(0, len(encoded), 64)
        ]
    )
    results["saved_model"] = {"seconds": time.perf_counter() - started, "p_dog": saved_p}

    originals = _originals(metadata, signature)
    for quantization in tflite_lib.QUANTIZATIONS:
        started = time.perf_counter()
        path = os.path.join(config.export_dir, tflite_lib.tflite_name(quantization))
        with open(path, "rb") as f:
            interpreter = tflite_lib.interpreter(f.read())
        p_dog = tflite_lib.p_dog(interpreter, images)
        results[f"tflite_{quantization}"] = {
            "seconds": time.perf_counter() - started,
            "p_dog": p_dog,
        }

    for result in results.values():
        p_dog = result.pop("p_dog", keras_p)
        result.setdefault("accuracy", float(np.mean(decision.class_id(p_dog) == labels)))
        result["flips_vs_keras"] = int(
            np.sum(decision.class_id(p_dog) != decision.class_id(keras_p))
        )
        result["max_abs_diff_p_dog_vs_keras"] = float(np.max(np.abs(p_dog - keras_p)))
    results["keras"]["accuracy_from_p_dog"] = float(np.mean(decision.class_id(keras_p) == labels))
    results["num_examples"] = int(len(labels))
    if originals:
        results["saved_model_original_photos"] = originals
    return results


def _val_originals(metadata: dict) -> tuple[list[bytes], list[bytes], list[int]]:
    """(stored bytes, original photo bytes, labels) of the val records whose photo is found.

    Empty when the records were not made from a folder.
    """
    import tensorflow as tf

    from records import schema
    from records.manifest import Manifest

    manifest = Manifest.load(metadata["records_dir"])
    inputs = (manifest.data.get("settings") or {}).get("inputs", [])
    folders = [p for p in inputs if os.path.isdir(p)]
    stored, originals, labels = [], [], []
    if not folders:
        return stored, originals, labels
    for serialized in tf.data.TFRecordDataset(manifest.split("val").paths):
        example = schema.parse_example(serialized)
        relative = example[schema.FILENAME].numpy().decode("utf-8", "surrogateescape")
        # A folder input's names are relative to the folder's parent (records.inputs.sources).
        paths = [os.path.join(os.path.dirname(folder), relative) for folder in folders]
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            continue
        with open(path, "rb") as f:
            originals.append(f.read())
        stored.append(example[schema.ENCODED].numpy())
        labels.append(int(example[schema.LABEL]))
    return stored, originals, labels


def _originals(metadata: dict, signature) -> dict | None:
    """Serving the *original* photos of the val records, as a client would send them.

    Against the same signature on the records' bytes (which equals Keras, measured
    above): what is left of the skew once the graph prepares them like make_records.
    None when the records were not made from a folder.
    """
    import numpy as np
    import tensorflow as tf

    stored, originals, labels = _val_originals(metadata)
    if not originals:
        return None

    def p_dog(encoded):
        return np.concatenate(
            [
                signature(image_bytes=tf.constant(encoded[i : i + 64]))["p_dog"].numpy()
                for i in range(0, len(encoded), 64)
            ]
        )

    from_records, from_originals = p_dog(stored), p_dog(originals)
    labels = np.array(labels)
    return {
        "images": len(labels),
        "accuracy": float(np.mean(decision.class_id(from_originals) == labels)),
        "accuracy_from_records": float(np.mean(decision.class_id(from_records) == labels)),
        "flips_vs_keras": int(
            np.sum(decision.class_id(from_originals) != decision.class_id(from_records))
        ),
        "max_abs_diff_p_dog_vs_keras": float(np.max(np.abs(from_originals - from_records))),
        "mean_abs_diff_p_dog_vs_keras": float(np.mean(np.abs(from_originals - from_records))),
    }


def _latency(config: BenchmarkConfig, metadata: dict, threads: int) -> dict:
    """Median/p90 milliseconds per single-image call of each format (run in its own process)."""
    import numpy as np
    import tensorflow as tf

    if threads:
        # Before any op runs: TF sizes its thread pools once per process.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from trainer.models import model as model_lib
    from trainer.serving import export as export_lib
    from trainer.serving import tflite as tflite_lib

    encoded, images, _ = _val(metadata)
    jpeg, image = tf.constant(encoded[:1]), tf.constant(images[:1])
    model = model_lib.load_model(config.model)
    keras_call = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False))
    serve = tf.saved_model.load(os.path.join(config.export_dir, export_lib.SAVED_MODEL_DIR))
    from_bytes = serve.signatures[export_lib.BYTES_SIGNATURE]
    from_images = serve.signatures[export_lib.IMAGES_SIGNATURE]
    calls = {
        "keras": lambda: keras_call(image).numpy(),
        "saved_model_jpeg_bytes": lambda: from_bytes(image_bytes=jpeg)["p_dog"].numpy(),
        "saved_model_images": lambda: from_images(images=image)["p_dog"].numpy(),
    }
    for quantization in tflite_lib.QUANTIZATIONS:
        with open(os.path.join(config.export_dir, tflite_lib.tflite_name(quantization)), "rb") as f:
            interpreter = tflite_lib.interpreter(f.read(), num_threads=threads or None)
        runner = interpreter.get_signature_runner()
        array = images[:1]
        calls[f"tflite_{quantization}"] = lambda runner=runner, array=array: runner(images=array)
    _, originals, _ = _val_originals(metadata)
    if originals:
        photo = tf.constant(originals[:1])
        calls["saved_model_original_photo"] = lambda: from_bytes(image_bytes=photo)["p_dog"].numpy()
    results = {"threads": threads or "default", "load_before": _load()}
    for call in calls.values():
        for _ in range(config.warmup):
            call()
    # Round-robin, one call of each format per round: load that drifts during the
    # measurement (a shared machine) is spread over all formats alike.
    times = {name: [] for name in calls}
    for _ in range(config.runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000)
    for name, milliseconds in times.items():
        results[name] = {
            "median_ms": float(np.median(milliseconds)),
            "p90_ms": float(np.percentile(milliseconds, 90)),
        }
    results["load_after"] = _load()
    return results


def _sizes(config: BenchmarkConfig, metadata: dict) -> dict:
    from trainer.serving import export as export_lib
    from trainer.serving import tflite as tflite_lib

    saved_model = sum(
        info["bytes"]
        for name, info in metadata["files"].items()
        if name.startswith(export_lib.SAVED_MODEL_DIR + "/")
    )
    sizes = {"keras": os.path.getsize(config.model), "saved_model": saved_model}
    for quantization in tflite_lib.QUANTIZATIONS:
        name = tflite_lib.tflite_name(quantization)
        sizes[f"tflite_{quantization}"] = metadata["files"][name]["bytes"]
    return sizes


def _table(results: dict) -> str:
    rows = [
        ("Keras `model.keras`", "keras", "keras"),
        ("SavedModel, JPEG bytes", "saved_model", "saved_model_jpeg_bytes"),
        ("SavedModel, uint8 images", None, "saved_model_images"),
        ("TFLite float16", "tflite_float16", "tflite_float16"),
        ("TFLite int8", "tflite_int8", "tflite_int8"),
    ]
    one, default = results["latency"]
    lines = [
        "| format | val accuracy | flips vs Keras | size | latency, 1 thread | latency, default threads |",
        "|---|---|---|---|---|---|",
    ]
    for label, accuracy_key, latency_key in rows:
        accuracy = results["accuracy"].get(accuracy_key) if accuracy_key else None
        size_key = accuracy_key or "saved_model"
        size = f"{results['sizes'][size_key] / 1e6:.2f} MB" if accuracy_key else "(same)"
        lines.append(
            f"| {label} | {accuracy['accuracy']:.4f} | {accuracy['flips_vs_keras']} | {size} | "
            if accuracy
            else f"| {label} | | | {size} | "
        )
        lines[-1] += (
            f"{one[latency_key]['median_ms']:.2f} ms | {default[latency_key]['median_ms']:.2f} ms |"
        )
    originals = results["accuracy"].get("saved_model_original_photos")
    if originals:
        key = "saved_model_original_photo"
        lines.append(
            f"| SavedModel, the original photos | {originals['accuracy']:.4f} | "
            f"{originals['flips_vs_keras']} | (same) | {one[key]['median_ms']:.2f} ms | "
            f"{default[key]['median_ms']:.2f} ms |"
        )
    return "\n".join(lines)


def main(config: BenchmarkConfig) -> int:
    from trainer.serving import export as export_lib

    with open(os.path.join(config.export_dir, export_lib.METADATA_NAME), encoding="utf-8") as f:
        metadata = json.load(f)
    if config.latency_threads is not None:
        print(json.dumps(_latency(config, metadata, config.latency_threads)))
        return 0
    results = {"export_dir": config.export_dir, "model": config.model, "cpus": os.cpu_count()}
    results["load_before"] = _load()
    results["accuracy"] = _accuracy(config, metadata)
    results["load_after_accuracy"] = _load()
    results["sizes"] = _sizes(config, metadata)
    results["latency"] = []
    for threads in (1, 0):
        # A fresh process per setting: TF fixes its thread pools at the first op.
        child = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                *sys.argv[1:],
                f"--latency_threads={threads}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results["latency"].append(json.loads(child.stdout.strip().splitlines()[-1]))
    results["load_after"] = _load()
    table = _table(results)
    results["table"] = table
    if config.output:
        with open(config.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    print(table)
    print(
        f"load average (1, 5, 15 min): before {results['load_before']}, after accuracy "
        f"{results['load_after_accuracy']}, latency 1 thread {results['latency'][0]['load_before']}"
        f" -> {results['latency'][0]['load_after']}, default {results['latency'][1]['load_before']}"
        f" -> {results['latency'][1]['load_after']}; {results['cpus']} CPUs"
    )
    return 0


if __name__ == "__main__":
    settings.run(BenchmarkConfig, main, __name__)
