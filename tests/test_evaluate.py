"""Tests for trainer/evaluate.py."""

from __future__ import annotations

import csv
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import convert, run_command, write_kaggle_folder, write_records
from pipeline import dataset as dataset_lib
from pipeline import decode
from records.manifest import Manifest
from trainer.inference import evaluation as evaluate_lib
from trainer.models import model as model_lib


@pytest.fixture
def saved_model(tmp_path):
    keras.utils.set_random_seed(2)
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8)
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "model.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_matches_keras_evaluate(saved_model, tiny_records):
    metrics = evaluate_lib.evaluate(
        str(saved_model), str(tiny_records), "val", batch_size=5
    ).metrics
    model = model_lib.load_model(str(saved_model))
    data = dataset_lib.eval_dataset(
        Manifest.load(str(tiny_records)), 5, split="val", image_size=(32, 32)
    )
    keras_loss, keras_accuracy = model.evaluate(data, verbose=0)
    assert metrics["num_examples"] == 12
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_loss, rel=1e-4)
    assert np.sum(metrics["confusion_matrix"]) == 12


def test_metric_functions():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    metrics = evaluate_lib.classification_metrics(labels, probabilities)
    assert metrics["accuracy"] == 0.75
    assert metrics["confusion_matrix"] == [[1, 1], [0, 2]]
    # Positives score 0.65, 0.8; negatives 0.1, 0.6: every positive outranks every negative.
    assert metrics["roc_auc"] == 1.0
    expected_log_loss = -np.mean(np.log([0.9, 0.4, 0.65, 0.8]))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss)
    assert evaluate_lib.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == 0.875
    assert evaluate_lib.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


@pytest.mark.slow
def test_cli_writes_json_and_text(saved_model, tiny_records, tmp_path):
    result = run_command(
        "trainer.evaluate",
        f"--model={saved_model}",
        f"--records_dir={tiny_records}",
        "--output_prefix=" + str(tmp_path / "out" / "eval"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert metrics["num_examples"] == 12
    assert "confusion matrix" in (tmp_path / "out" / "eval.txt").read_text()
    missing = run_command(
        "trainer.evaluate", f"--model={tmp_path / 'nope.keras'}", f"--records_dir={tiny_records}"
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_select_mistakes_is_the_top_n_by_loss():
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    prob_dog = np.array([0.9, 0.2, 0.7, 0.55, 0.01, 0.1, 0.9, 0.4])
    # Mistakes: 0 (cat, 0.9), 1 (dog, 0.2), 3 (cat, 0.55), 4 (dog, 0.01), 6 (cat, 0.9),
    # 7 (dog, 0.4). Losses: -log(0.1), -log(0.2), -log(0.45), -log(0.01), -log(0.1), -log(0.4).
    assert evaluate_lib.select_mistakes(labels, prob_dog, 3).tolist() == [4, 0, 6]
    assert evaluate_lib.select_mistakes(labels, prob_dog, 100).tolist() == [4, 0, 6, 1, 7, 3]
    assert evaluate_lib.select_mistakes(labels, prob_dog, 0).tolist() == []
    # Correct answers are never "mistakes", however high their loss.
    assert evaluate_lib.select_mistakes([1, 0], [0.51, 0.49], 5).tolist() == []
    # Exactly 0.5 is predicted cat (the argmax of [0.5, 0.5]): a mistake for a dog.
    assert evaluate_lib.select_mistakes([1, 0], [0.5, 0.5], 5).tolist() == [0]
    # Ties keep split order, or the order given by positions.
    assert evaluate_lib.select_mistakes([0, 0], [0.8, 0.8], 2, np.array([5, 2])).tolist() == [1, 0]


def test_merging_batches_keeps_the_split_top_n():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    prob_dog = np.round(rng.random(200), 2)  # rounded: many ties
    expected = evaluate_lib.select_mistakes(labels, prob_dog, 7)
    kept = evaluate_lib.Mistakes.empty((1, 1, 3))
    for start in range(0, 200, 32):
        batch = slice(start, start + 32)
        positions = np.arange(200)[batch]
        kept = kept.merge(
            evaluate_lib.Mistakes(
                positions.astype(np.uint8).reshape(-1, 1, 1, 1).repeat(3, axis=-1),
                labels[batch],
                prob_dog[batch],
                [f"image{i}" for i in positions],
                positions,
            ),
            7,
        )
    assert kept.positions.tolist() == expected.tolist()
    assert kept.filenames == [f"image{i}" for i in expected]
    assert kept.images[:, 0, 0, 0].tolist() == expected.astype(np.uint8).tolist()
    assert np.all(np.diff(kept.losses) <= 0)


def _brightness_model(path):
    """P(dog) = sigmoid(12 * (mean brightness in 0..1 - 0.5)): answers known in advance."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.array([[-2.0, 2.0]] * 3, "float32"), np.array([3.0, -3.0], "float32")])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def _flat_jpeg(level: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(level + rng.normal(0, 8, (40, 48, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.slow
def test_cli_pictures_and_the_most_confident_mistakes(tmp_path):
    # Bright pictures are dogs to this model. Cats that are bright and dogs that are dark
    # are its mistakes, the brighter (darker) the more confident.
    examples = [
        (_flat_jpeg(230, 1), 0, "cat.\udcff.jpg"),  # the worst mistake, a non-UTF-8 name
        (_flat_jpeg(200, 2), 0, "train/cat.2.jpg"),
        (_flat_jpeg(170, 3), 0, "cat.3.jpg"),
        (_flat_jpeg(40, 4), 0, "cat.4.jpg"),
        (_flat_jpeg(30, 5), 1, "dog.5.jpg"),
        (_flat_jpeg(100, 6), 1, "dog.6.jpg"),
        (_flat_jpeg(220, 7), 1, "dog.7.jpg"),
        (_flat_jpeg(60, 8), 0, "cat.8.jpg"),
    ]
    records_dir = tmp_path / "records"
    write_records(records_dir, {"val": examples}, num_shards=3)
    model_path = _brightness_model(tmp_path / "model" / "model.keras")
    result = run_command(
        "trainer.evaluate",
        f"--model={model_path}",
        f"--records_dir={records_dir}",
        "--num_mistakes=3",
        "--batch_size=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    prefix = tmp_path / "model" / "eval_val"  # beside the model, as the JSON always was
    for picture in ("_confusion.png", "_mistakes.png"):
        path = f"{prefix}{picture}"
        assert path in result.stdout
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100

    # The expected answer, computed apart from evaluate: each stored JPEG decoded alone.
    model = keras.models.load_model(model_path)
    images = np.stack(
        [decode.decode_and_resize(tf.constant(jpeg), (32, 32)).numpy() for jpeg, _, _ in examples]
    )
    prob_dog = np.asarray(model.predict_on_batch(images))[:, 1]
    labels = np.array([label for _, label, _ in examples])
    losses = -np.log(np.where(labels == 1, prob_dog, 1 - prob_dog))
    wrong = [i for i in range(len(examples)) if (prob_dog[i] > 0.5) != labels[i]]
    assert len(wrong) == 5  # cats 1-3 (bright), dogs 5-6 (dark)
    top3 = sorted(wrong, key=lambda i: -losses[i])[:3]
    assert top3 == [0, 4, 1]
    metrics = json.loads(prefix.with_suffix(".json").read_text(encoding="utf-8"))
    shown = metrics["top_mistakes"]
    # The names as the manifest and logs show them (escaped where not UTF-8).
    assert [m["filename"] for m in shown] == ["cat.\\xff.jpg", "dog.5.jpg", "train/cat.2.jpg"]
    assert [m["true_label"] for m in shown] == ["cat", "dog", "cat"]
    np.testing.assert_allclose([m["prob_dog"] for m in shown], prob_dog[top3], atol=1e-5)
    assert "cat.\\xff.jpg  true cat" in prefix.with_suffix(".txt").read_text(encoding="utf-8")


def test_mistakes_carry_the_images_the_model_saw(tmp_path):
    examples = [
        (_flat_jpeg(230, 1), 0, "cat.1.jpg"),
        (_flat_jpeg(20, 2), 1, "dog.2.jpg"),
        (_flat_jpeg(210, 3), 1, "dog.3.jpg"),
    ]
    write_records(tmp_path / "records", {"val": examples}, num_shards=2)
    model_path = _brightness_model(tmp_path / "model.keras")
    mistakes = evaluate_lib.evaluate(
        str(model_path), str(tmp_path / "records"), batch_size=2, num_mistakes=5
    ).mistakes
    assert mistakes.filenames == ["dog.2.jpg", "cat.1.jpg"]  # the darker dog is worse
    jpegs = {name: jpeg for jpeg, _, name in examples}
    for image, name in zip(mistakes.images, mistakes.filenames):
        seen = decode.decode_and_resize(tf.constant(jpegs[name]), (32, 32)).numpy()
        np.testing.assert_array_equal(image, seen)


@pytest.mark.slow
def test_tta_none_is_todays_output_and_flip_changes_the_prefix(saved_model, tiny_records):
    from trainer import evaluate as evaluate_cli

    plain = evaluate_lib.evaluate(str(saved_model), str(tiny_records), batch_size=5)
    model = model_lib.load_model(str(saved_model))
    data = dataset_lib.eval_dataset(
        Manifest.load(str(tiny_records)), 5, split="val", image_size=(32, 32)
    )
    today = np.concatenate([np.asarray(model.predict_on_batch(images)) for images, _ in data])
    labels = np.concatenate([labels.numpy() for _, labels in data])
    expected = evaluate_lib.classification_metrics(labels, today)
    for key in ("accuracy", "loss", "log_loss", "roc_auc", "confusion_matrix"):
        assert plain.metrics[key] == expected[key]
    config = evaluate_cli.EvaluateConfig(
        model=str(saved_model), records_dir=str(tiny_records), tta="flip"
    )
    assert evaluate_cli.output_prefix(config).endswith(os.path.join("", "eval_val_tta_flip"))
    with pytest.raises(ValueError, match="tta='both'"):
        evaluate_cli.EvaluateConfig(model="m", records_dir="r", tta="both")


@pytest.mark.slow
def test_evaluate_on_the_held_out_test_split(saved_model, tmp_path):
    from trainer import evaluate as evaluate_cli

    write_kaggle_folder(tmp_path / "train", 8)
    records_dir = tmp_path / "records"
    convert([tmp_path / "train"], records_dir, val_fraction=0.25, test_fraction=0.25)
    manifest = Manifest.load(str(records_dir))
    config = evaluate_cli.EvaluateConfig(
        model=str(saved_model), records_dir=str(records_dir), split="test", num_mistakes=0
    )
    assert evaluate_cli.main(config) == 0
    metrics = json.loads((tmp_path / "eval_test.json").read_text())
    assert metrics["num_examples"] == manifest.num_examples("test") > 0
    # Every test image once, and only those: the names the records hold for test.
    with open(tmp_path / "eval_test_predictions.csv", newline="") as f:
        predicted = sorted(row["filename"] for row in csv.DictReader(f))
    tested = dataset_lib.eval_dataset(manifest, 64, split="test", with_filenames=True)
    names = sorted(
        evaluate_lib.display_filename(n) for _, _, batch in tested for n in batch.numpy()
    )
    assert predicted == names
    with pytest.raises(ValueError, match="split='tset': expected one of train, val, test"):
        evaluate_cli.EvaluateConfig(model="m", records_dir="r", split="tset")


@pytest.mark.slow
def test_litert_engine_gives_keras_answers(saved_model, tiny_records, litert_images):
    results = {
        engine: evaluate_lib.evaluate(
            str(saved_model), str(tiny_records), "val", batch_size=5, engine=engine
        )
        for engine in ("keras", "litert")
    }
    keras_result, lite_result = results["keras"], results["litert"]
    assert sum(litert_images) == 1 + 12  # the check on one image, then the split
    assert (keras_result.metrics["engine"], lite_result.metrics["engine"]) == ("keras", "litert")
    np.testing.assert_allclose(lite_result.prob_dog, keras_result.prob_dog, atol=2e-6)
    assert lite_result.filenames == keras_result.filenames
    assert lite_result.metrics["confusion_matrix"] == keras_result.metrics["confusion_matrix"]
    # auto: 12 images do not pay for a conversion, but the one cached beside the model does.
    auto = evaluate_lib.evaluate(str(saved_model), str(tiny_records), "val", batch_size=5)
    assert auto.metrics["engine"] == "litert"
