"""Tests for trainer/serving/export.py and the export_model command.

One tiny model is trained on tiny records (a few seconds) and exported once per module;
the tests then check the SavedModel from a process that has neither Keras nor this
project, the bad-input rows, and the TFLite models against the Keras model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
    TINY_TRAIN_SETTINGS,
    alternating_examples,
    make_jpeg_bytes,
    run_command,
    subprocess_env,
    write_records,
)
from pipeline import dataset as dataset_lib
from pipeline import decode, photos, shards
from records import photo, photo_header, schema, stored_photo
from records.manifest import Manifest
from trainer.inference import evaluation
from trainer.models import model as model_lib
from trainer.serving import export as export_lib
from trainer.serving import tflite as tflite_lib
from trainer.training import fit
from trainer.training.config import TrainConfig

# The module's fixtures train a model and run export_model in a subprocess (~20 s), and
# the tests without them decode real-size photos for seconds each.
pytestmark = pytest.mark.slow

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(records_dir, model.keras) of a tiny small_cnn trained for 4 steps."""
    root = tmp_path_factory.mktemp("export")

    # Sizes around and above the input size, so the DCT-ratio branch is taken too.
    records_dir = root / "records"
    write_records(
        records_dir,
        {
            "train": alternating_examples(24, 0, height_step=40, width_step=24),
            "val": alternating_examples(12, 500, height_step=40, width_step=24),
        },
    )
    config = TrainConfig(
        records_dir=str(records_dir),
        model_dir=str(root / "model"),
        epochs=1,
        steps_per_epoch=4,
        augment="none",
        **{**TINY_TRAIN_SETTINGS, "backbone": "small_cnn", "pooling": "avg"},
    )
    fit.train(config)
    return records_dir, root / "model" / fit.MODEL_NAME


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The export_model command's output folder, made by the command (in this process)."""
    _, model_path = trained
    output_dir = tmp_path_factory.mktemp("out") / "export"
    result = run_command(
        "trainer.export_model",
        f"--model={model_path}",
        f"--output_dir={output_dir}",
        "--calibration_images=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model_int8.tflite" in result.stdout
    return output_dir


def _val_records(records_dir):
    """(JPEG bytes, labels) of the val split, in evaluate's order."""
    split = Manifest.load(str(records_dir)).split("val")
    examples = shards.read_examples(
        split.paths, split.counts, training=False, deterministic=True, seed=None, input_context=None
    )
    encoded, labels = [], []
    for image_bytes, _, _, label in examples:
        encoded.append(image_bytes.numpy())
        labels.append(int(label))
    return encoded, np.array(labels)


def test_saved_model_without_keras_matches_evaluate(trained, exported, tmp_path):
    records_dir, model_path = trained
    encoded, labels = _val_records(records_dir)
    np.save(tmp_path / "val_bytes.npy", np.array(encoded, dtype=object), allow_pickle=True)
    # A client: plain TensorFlow, not this project (no PYTHONPATH), no Keras.
    # `import tensorflow` itself imports Keras whenever it is installed (TF's __init__
    # preloads keras.src.optimizers, ignoring an ImportError), so the client hides Keras
    # as a serving host without it would: None in sys.modules makes every import of it fail.
    client = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["keras"] = sys.modules["tf_keras"] = None
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load({str(exported / "saved_model")!r})
        encoded = np.load({str(tmp_path / "val_bytes.npy")!r}, allow_pickle=True).tolist()
        out = served.signatures["serving_default"](image_bytes=tf.constant(encoded))
        loaded = {{m.split(".")[0] for m, module in sys.modules.items() if module is not None}}
        assert not loaded & {{"keras", "tf_keras", "trainer", "pipeline", "records"}}, loaded
        texts = ("class_name", "status")
        print(json.dumps({{k: v.numpy().tolist() for k, v in out.items() if k not in texts}}
                         | {{k: [s.decode() for s in out[k].numpy()] for k in texts}}))
        """
    )
    env = subprocess_env()
    env.pop("PYTHONPATH")
    result = subprocess.run(
        [sys.executable, "-c", client],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])

    # evaluate's own numbers for the same records.
    metrics = evaluation.evaluate(str(model_path), str(records_dir), "val", batch_size=5).metrics
    p_dog = np.array(served["p_dog"])
    assert served["valid"] == [True] * len(labels)
    reference = model_lib.load_model(str(model_path))
    data = dataset_lib.eval_dataset(
        Manifest.load(str(records_dir)), 5, split="val", image_size=IMAGE_SIZE
    )
    keras_p_dog = np.concatenate(
        [model_lib.prob_dog(reference.predict_on_batch(x)) for x, _ in data]
    )
    np.testing.assert_allclose(p_dog, keras_p_dog, atol=1e-5)
    served_metrics = evaluation.classification_metrics(labels, np.stack([1 - p_dog, p_dog], 1))
    assert served_metrics["accuracy"] == metrics["accuracy"]
    assert served_metrics["log_loss"] == pytest.approx(metrics["log_loss"], abs=1e-5)
    assert served["class_id"] == (p_dog > 0.5).astype(int).tolist()
    assert served["class_name"] == [schema.CLASS_NAMES[c] for c in served["class_id"]]


def test_metadata(trained, exported):
    records_dir, model_path = trained
    metadata = json.loads((exported / export_lib.METADATA_NAME).read_text())
    training_metrics = json.loads((model_path.parent / fit.METRICS_NAME).read_text())
    assert metadata["input"]["height"] == metadata["input"]["width"] == IMAGE_SIZE
    assert metadata["labels"] == ["cat", "dog"]
    # The test writer's records name no settings: photos are prepared at full size.
    assert metadata["prepare"] == {
        "max_short_side": None,
        "jpeg_quality": 90,
        "max_pixels": 65_000_000,
    }
    assert metadata["threshold"] == 0.5
    assert metadata["source_model"]["val_accuracy"] == training_metrics["model_val_accuracy"]
    assert metadata["source_model"]["sha256"] == export_lib.sha256_file(str(model_path))
    assert metadata["calibration"]["images"] == 16
    written = {
        str(p.relative_to(exported))
        for p in exported.rglob("*")
        if p.is_file() and p.name != export_lib.METADATA_NAME
    }
    assert written == set(metadata["files"])
    assert {"model_float16.tflite", "model_int8.tflite", "saved_model/saved_model.pb"} <= written
    for name, info in metadata["files"].items():
        assert info["sha256"] == export_lib.sha256_file(str(exported / name)), name
    # Each weight stored once (tracking the model in the archive stored them twice).
    weights_bytes = sum(w.numpy().nbytes for w in model_lib.load_model(str(model_path)).weights)
    stored = sum(info["bytes"] for name, info in metadata["files"].items() if "/variables/" in name)
    assert weights_bytes <= stored < 1.2 * weights_bytes


def test_bad_rows_are_flagged_not_guessed(trained, exported):
    records_dir, _ = trained
    good = _val_records(records_dir)[0][0]
    png = tf.io.encode_png(tf.zeros([40, 40, 3], tf.uint8)).numpy()
    batch = [
        good,
        good[: len(good) // 2],  # truncated upload
        good[:-2],  # only the end marker missing
        b"<html>not found</html>",
        b"",
        png,
        good,
    ]
    serve = tf.saved_model.load(str(exported / "saved_model")).signatures["serving_default"]
    out = {k: v.numpy() for k, v in serve(image_bytes=tf.constant(batch)).items()}
    # A PNG is a photo too: prepared as make_records stores it.
    assert out["valid"].tolist() == [True, False, False, False, False, True, True]
    assert out["status"][1:5].tolist() == [b"truncated", b"truncated", b"not an image", b"empty"]
    assert np.isnan(out["p_dog"][1:5]).all()
    assert out["class_id"][1:5].tolist() == [-1] * 4
    assert out["class_name"][1:5].tolist() == [b""] * 4
    # The good rows are unaffected by their neighbours.
    alone = serve(image_bytes=tf.constant([good]))["p_dog"].numpy()[0]
    assert out["p_dog"][0] == pytest.approx(alone, abs=1e-6)
    assert out["p_dog"][6] == pytest.approx(alone, abs=1e-6)
    # An empty request is an empty answer (the Keras model alone fails on one).
    empty = serve(image_bytes=tf.constant([], tf.string))
    assert empty["p_dog"].shape == (0,) and empty["valid"].shape == (0,)
    # Complete-looking bytes with broken headers, or damaged data with intact markers: that
    # row is refused, the others served (once an error for the whole call).
    damaged = bytearray(good)
    table = damaged.index(b"\xff\xc4")
    damaged[table + 5 : table + 21] = bytes([200] * 16)  # impossible Huffman code counts
    junk = b"\xff\xd8\xff" + b"junk" * 20 + b"\xff\xd9"
    out = serve(image_bytes=tf.constant([good, junk, bytes(damaged), good]))
    assert out["valid"].numpy().tolist() == [True, False, False, True]
    assert out["status"].numpy()[2] == b"cannot decode"
    assert out["p_dog"].numpy()[3] == pytest.approx(alone, abs=1e-6)
    # Why rows are checked one by one: decoding the truncated row fails the whole op.
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(good[: len(good) // 2])


@pytest.mark.parametrize("in_tf_data", [False, True])
def test_photo_batch_flags_rows_eagerly_and_in_tf_data(in_tf_data):
    good = make_jpeg_bytes(seed=7)
    rows = [good, good[:-1], good[:100], b"\xff\xd8\xff\xd9", b"\xff", b"", b"GIF89a\xff\xd9"]
    settings = photo.StoreSettings()

    def batch(encoded):
        return photos.photo_batch(encoded, settings, (IMAGE_SIZE, IMAGE_SIZE))[1]

    if in_tf_data:
        status = next(iter(tf.data.Dataset.from_tensors(rows).map(batch))).numpy()
    else:
        status = batch(tf.constant(rows)).numpy()
    names = [photo_header.STATUSES[code] for code in status]
    assert names[0] == "ok" and names[5] == "empty" and names[4] == "not an image"
    assert names[1:3] == ["truncated"] * 2
    # Start and end markers with nothing between, a GIF header and nothing else: the
    # header parser or the decoder refuses them.
    assert names[3] == names[6] == "cannot decode"


def test_images_signature_equals_bytes_signature(trained, exported):
    records_dir, _ = trained
    encoded = _val_records(records_dir)[0]
    loaded = tf.saved_model.load(str(exported / "saved_model"))
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    images = tf.stack([decode.decode_and_resize(e, IMAGE_SIZE) for e in encoded])
    from_images = loaded.signatures["serving_images"](images=images)
    np.testing.assert_allclose(from_images["p_dog"], from_bytes["p_dog"], atol=1e-6)
    assert from_images["valid"].numpy().all()


def test_tflite_models_agree_with_keras(trained, exported):
    records_dir, model_path = trained
    model = model_lib.load_model(str(model_path))
    data = dataset_lib.eval_dataset(
        Manifest.load(str(records_dir)), 12, split="val", image_size=IMAGE_SIZE
    )
    images = np.concatenate([x.numpy() for x, _ in data])
    keras_p_dog = model_lib.prob_dog(model.predict_on_batch(images))
    for quantization, tolerance in (("float16", 2e-3), ("int8", 0.05)):
        content = (exported / tflite_lib.tflite_name(quantization)).read_bytes()
        interpreter = tflite_lib.interpreter(content)
        (signature,) = interpreter.get_signature_list().values()
        assert signature["inputs"] == ["images"]
        input_details = interpreter.get_input_details()[0]
        assert input_details["dtype"] == np.uint8
        assert input_details["shape"].tolist()[1:] == [IMAGE_SIZE, IMAGE_SIZE, 3]
        p_dog = tflite_lib.p_dog(interpreter, images)
        np.testing.assert_allclose(p_dog, keras_p_dog, atol=tolerance, err_msg=quantization)
    metadata = json.loads((exported / export_lib.METADATA_NAME).read_text())
    int8_ops = metadata["tflite"]["int8"]
    # Every op of this network has an int8 kernel: nothing is left in float.
    assert int8_ops["float_ops"] == []
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(int8_ops["integer_ops"])
    assert "CONV_2D" in metadata["tflite"]["float16"]["float_ops"]


def test_errors_say_what_to_do(trained, exported, tmp_path):
    _, model_path = trained
    result = run_command(
        "trainer.export_model", f"--model={model_path}", f"--output_dir={exported}"
    )
    assert result.returncode == 2
    assert f"export_model: error: --output_dir={exported} already exists" in result.stderr
    assert "--overwrite" in result.stderr.splitlines()[-1]
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_lib.export(str(model_path), str(exported))
    with pytest.raises(FileNotFoundError, match="--model="):
        export_lib.export(str(tmp_path / "nope.keras"), str(tmp_path / "out"))
    # A model without metrics.json: the records must be named.
    lonely = tmp_path / "lonely" / "model.keras"
    lonely.parent.mkdir()
    lonely.write_bytes(model_path.read_bytes())
    with pytest.raises(FileNotFoundError, match="--records_dir"):
        export_lib.export(str(lonely), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("in_tf_data", [False, True])
def test_photo_input_is_validations_decode_of_make_records_bytes(in_tf_data):
    small = make_jpeg_bytes(60, 90, seed=3)  # short side 60 <= 64: stored byte for byte
    large = make_jpeg_bytes(200, 300, seed=4)  # stored as a 64 x 96 Lanczos copy
    settings = photo.StoreSettings(max_short_side=64)

    def model_input(encoded):
        return photos.photo_input(encoded, settings, (IMAGE_SIZE, IMAGE_SIZE))[0]

    if in_tf_data:
        pixels = [
            e.numpy() for e in tf.data.Dataset.from_tensor_slices([small, large]).map(model_input)
        ]
    else:
        pixels = [model_input(tf.constant(e)).numpy() for e in (small, large)]
    for data, got in zip((small, large), pixels):
        stored = stored_photo.prepare(data, max_short_side=64, jpeg_quality=90)
        # What eval_dataset feeds the model for the record make_records wrote: bit for bit.
        max_ratio = decode.max_useful_ratio(64, IMAGE_SIZE)
        expected = decode.decode_and_resize(
            stored.encoded, IMAGE_SIZE, stored.height, stored.width, max_ratio
        ).numpy()
        np.testing.assert_array_equal(got, expected)


def _with_records(model_path, records_dir, model_dir):
    """A copy of the model whose metrics.json says it was trained on ``records_dir``."""
    model_dir.mkdir()
    copy = model_dir / model_path.name
    copy.write_bytes(model_path.read_bytes())
    manifest = Manifest.load(str(records_dir))
    (model_dir / fit.METRICS_NAME).write_text(
        json.dumps(
            {
                "settings": {"records_dir": str(records_dir)},
                "records_settings": manifest.data["settings"],
            }
        )
    )
    return copy


def test_original_photos_are_served_like_their_records(trained, tmp_path):
    """Records made by make_records with --max_short_side: the served record bytes equal
    Keras on eval_dataset, and so do the original photos (prepared in the graph)."""
    from records import writer

    _, model_path = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(24):
        # Half already small enough to be stored byte for byte, half shrunk to 40 px.
        height, width = (36, 52) if i % 2 else (96 + 8 * (i % 3), 128)
        name = f"{schema.CLASS_NAMES[i % 2]}.{i}.jpg"
        (folder / name).write_bytes(make_jpeg_bytes(height, width, seed=900 + i))
    records_dir = tmp_path / "records40"
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(folder),),
            output_dir=str(records_dir),
            max_short_side=40,
            val_fraction=0.5,
            single_process=True,
            progress=False,
        )
    )
    # The same model, as if trained on these records (train writes their settings).
    model_path = _with_records(model_path, records_dir, tmp_path / "model40")
    metadata = export_lib.export(str(model_path), str(tmp_path / "export"), calibration_images=8)
    assert metadata["prepare"] == {
        "max_short_side": 40,
        "jpeg_quality": 90,
        "max_pixels": 65_000_000,
    }
    loaded = tf.saved_model.load(str(tmp_path / "export" / "saved_model"))
    serve, serve_images = (loaded.signatures[k] for k in ("serving_default", "serving_images"))
    manifest = Manifest.load(str(records_dir))
    stored, originals = [], []
    for serialized in tf.data.TFRecordDataset(manifest.split("val").paths):
        example = schema.parse_example(serialized)
        stored.append(example[schema.ENCODED].numpy())
        name = example[schema.FILENAME].numpy().decode()
        originals.append((tmp_path / name).read_bytes())
    assert any(s != o for s, o in zip(stored, originals))  # some were shrunk
    from_records = serve(image_bytes=tf.constant(stored))["p_dog"].numpy()
    from_originals = serve(image_bytes=tf.constant(originals))["p_dog"].numpy()
    model = model_lib.load_model(str(model_path))
    images = tf.stack([decode.decode_and_resize(s, IMAGE_SIZE, max_ratio=1) for s in stored])
    np.testing.assert_allclose(from_records, model_lib.prob_dog(model(images)), atol=1e-5)
    # Without the in-graph preparation the originals would be much further off.
    unprepared = tf.stack([decode.decode_and_resize(o, IMAGE_SIZE) for o in originals])
    # The originals go through make_records' own preparation: the records' pixels exactly,
    # where decoding them as they are would give other pixels than the model validated on.
    np.testing.assert_allclose(from_originals, from_records, atol=1e-5)
    assert not np.array_equal(unprepared.numpy(), images.numpy())
