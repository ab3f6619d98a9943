"""Tests for trainer/inference/prediction.py and trainer/predict.py: a Kaggle submission from a
folder or zip.

The models here have answers known in advance (P(dog) = brightness of the picture, or of
its top half), so the tests check predict's output against the picture, not against
the same computation run a second time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import make_big_jpeg, make_damaged_jpeg, make_jpeg_bytes, png_claiming
from pipeline import dataset as dataset_lib
from pipeline import decode
from records import photo_header, stored_photo, writer
from records.inputs import labels, unlabelled
from records.manifest import Manifest
from records.photo import StoreSettings
from records.photo_batches import BadImage
from trainer import predict as predict_cli
from trainer.inference import prediction as predict_lib

IMAGE_SIZE = (32, 32)
HUGE = f"image too large: 9000x9000 = 81000000 pixels (limit {photo_header.MAX_PIXELS})"


def _brightness_model(path, *, top_half=False, left_half=False, head="softmax", sharpness=20.0):
    """Saves a model whose P(dog) = sigmoid(2 * sharpness * (brightness - 0.5)).

    Brightness is the mean pixel value in 0..1 of the whole picture, or of its top or
    left half.
    With the softmax head, column 1 is dog: a model that mixed up the columns would call
    bright pictures cats.
    """
    inputs = keras.Input((*IMAGE_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    if top_half:
        x = keras.layers.Cropping2D(((0, IMAGE_SIZE[0] // 2), (0, 0)))(x)
    if left_half:
        x = keras.layers.Cropping2D(((0, 0), (0, IMAGE_SIZE[1] // 2)))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if head == "softmax":
        dense = keras.layers.Dense(2, activation="softmax")
        weights = [np.array([[-1, 1]] * 3) * sharpness / 3, np.array([1, -1]) * sharpness / 2]
    else:
        dense = keras.layers.Dense(1, activation="sigmoid")
        weights = [np.full((3, 1), 2 * sharpness / 3), np.array([-sharpness])]
    model = keras.Model(inputs, dense(x))
    dense.set_weights([w.astype("float32") for w in weights])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    # As train writes it: how the (here imaginary) training records stored photos.
    (path.parent / "metrics.json").write_text(
        json.dumps({"records_settings": {"max_short_side": None, "jpeg_quality": 90}})
    )
    return path


@pytest.fixture
def model_path(tmp_path):
    return _brightness_model(tmp_path / "model" / "model.keras")


def _jpeg(level: int, seed: int, height=40, width=56) -> bytes:
    """A photo-like JPEG of mean brightness ~``level`` (0..255)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(level + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _write(path, data: bytes) -> None:
    """Writes ``data`` to a str/Path or a *bytes* path (for names that are not UTF-8)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read_submission(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"]
    return [(row[0], float(row[1])) for row in rows[1:]]


def _sidecar(output, kind):
    return json.loads(output.with_name(f"{output.stem}.{kind}.json").read_text(encoding="utf-8"))


# Kaggle-like test ids with known answers: bright pictures are dogs, dark ones cats.
DOGS, CATS = (1, 3, 10), (2, 11, 12)


def _test_folder(folder):
    folder.mkdir()
    for image_id in DOGS:
        _write(folder / f"{image_id}.jpg", _jpeg(215, seed=image_id))
    for image_id in CATS:
        _write(folder / f"{image_id}.jpg", _jpeg(40, seed=image_id))
    png = io.BytesIO()
    Image.new("RGB", (30, 20), (230, 230, 230)).save(png, "PNG")
    _write(folder / "4.PNG", png.getvalue())  # a dog, as a PNG with an upper-case name
    _write(folder / "5.jpg", b"this is not an image")
    # Not images: no rows, listed in <stem>.ignored.json.
    _write(folder / "Thumbs.db", b"\xd0\xcf\x11\xe0 windows thumbnail cache")
    _write(folder / ".DS_Store", b"\0\0\0\1Bud1")
    _write(folder / "notes.txt", b"remember to submit")
    _write(folder / "extra.zip", b"PK\x03\x04")


def _zip_folder(folder, archive):
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.iterdir()):
            z.write(path, f"test1/{path.name}")
        z.writestr("__MACOSX/test1/._1.jpg", b"resource fork")


@pytest.mark.slow
@pytest.mark.parametrize("as_zip", [False, True])
def test_submission_rows_labels_and_sidecars(model_path, tmp_path, as_zip):
    source = tmp_path / "test1"
    _test_folder(source)
    if as_zip:
        _zip_folder(source, tmp_path / "test1.zip")
        source = tmp_path / "test1.zip"
    output = tmp_path / "submission.csv"
    summary = predict_lib.predict(str(model_path), str(source), str(output), batch_size=3)

    rows = _read_submission(output)
    assert [image_id for image_id, _ in rows] == ["1", "2", "3", "4", "5", "10", "11", "12"]
    assert summary == {**summary, "images": 8, "predicted": 7, "bad_images": 1}
    labels_by_id = dict(rows)
    # Label direction: dog = 1. Bright pictures (dogs) score high, dark ones (cats) low.
    for image_id in (*DOGS, 4):
        assert labels_by_id[str(image_id)] > 0.99, image_id
    for image_id in CATS:
        assert labels_by_id[str(image_id)] < 0.01, image_id
    assert labels_by_id["5"] == 0.5

    (bad,) = _sidecar(output, "bad_images")
    assert bad["id"] == "5" and bad["reason"].startswith("not an image (no known image format")
    ignored = {entry["name"]: entry["reason"] for entry in _sidecar(output, "ignored")}
    images_are = f"images are {', '.join(unlabelled.IMAGE_EXTENSIONS)}"
    assert ignored == {
        "test1/.DS_Store": "hidden file",
        "test1/Thumbs.db": f"not an image file name (extension '.db'; {images_are})",
        "test1/extra.zip": labels.NESTED_ARCHIVE,
        "test1/notes.txt": f"not an image file name (extension '.txt'; {images_are})",
        **({"__MACOSX/test1/._1.jpg": "macOS metadata (__MACOSX folder)"} if as_zip else {}),
    }
    assert summary["ignored"] == len(ignored)


def test_sigmoid_head_gives_p_dog_too(tmp_path):
    model_path = _brightness_model(tmp_path / "m" / "model.keras", head="sigmoid")
    _test_folder(tmp_path / "test1")
    output = tmp_path / "s.csv"
    predict_lib.predict(str(model_path), str(tmp_path / "test1"), str(output))
    labels_by_id = dict(_read_submission(output))
    assert all(labels_by_id[str(i)] > 0.99 for i in DOGS)
    assert all(labels_by_id[str(i)] < 0.01 for i in CATS)


def test_file_names_that_are_not_utf8(model_path, tmp_path):
    folder = tmp_path / "test1"
    folder.mkdir()
    base = os.fsencode(folder)
    _write(folder / "1.jpg", _jpeg(215, seed=1))
    _write(base + b"/\xff.jpg", _jpeg(40, seed=2))  # a Latin-1 era name
    _write(base + b"/\xfe.jpg", b"not a picture")  # ... that is also a bad image
    _write(base + b"/notes \xe9.txt", b"hello")  # ... and one that is ignored
    output = tmp_path / "submission.csv"
    predict_lib.predict(str(model_path), str(folder), str(output))

    raw = output.read_bytes().decode("utf-8")  # plain UTF-8, no lone surrogates
    assert "\\udc" not in raw
    labels_by_id = dict(_read_submission(output))
    assert set(labels_by_id) == {"1", "\\xff", "\\xfe"}
    assert labels_by_id["\\xff"] < 0.01 and labels_by_id["\\xfe"] == 0.5
    assert [(e["name"], e["id"]) for e in _sidecar(output, "bad_images")] == [
        ("test1/\\xfe.jpg", "\\xfe")
    ]
    assert [e["name"] for e in _sidecar(output, "ignored")] == ["test1/notes \\xe9.txt"]


@pytest.mark.slow
def test_tta_flip_averages_each_image_and_its_mirror(tmp_path):
    # P(dog) = brightness of the left half; the pictures are bright on one side only, so
    # the mirror's answer is the opposite one.
    model_path = _brightness_model(tmp_path / "model" / "model.keras", left_half=True)
    folder = tmp_path / "test1"
    folder.mkdir()
    for image_id, bright_left in ((1, True), (2, False), (3, True)):
        pixels = np.full((40, 56, 3), 30, np.uint8)
        (pixels[:, :28] if bright_left else pixels[:, 28:])[...] = 220
        pixels[image_id] = 128  # each image a little different
        Image.fromarray(pixels).save(folder / f"{image_id}.jpg", "JPEG", quality=95)
    outputs = {}
    for tta in ("none", "flip"):
        outputs[tta] = tmp_path / f"{tta}.csv"
        summary = predict_lib.predict(str(model_path), str(folder), str(outputs[tta]), tta=tta)
        assert summary["tta"] == tta
    # Two manual passes over the images exactly as predict prepares them.
    model = keras.models.load_model(model_path)
    items = unlabelled.list_unlabelled(str(folder)).images
    images = np.stack(
        [
            image.numpy()
            for _, image in predict_lib.image_dataset(items, StoreSettings(), IMAGE_SIZE, {})
        ]
    )
    plain = np.asarray(model.predict_on_batch(images))[:, 1]
    mirrored = np.asarray(model.predict_on_batch(images[:, :, ::-1].copy()))[:, 1]
    assert np.all(np.abs(plain - mirrored) > 0.9)  # the flip matters here
    ids = [predict_lib.submission_id(item.name) for item in items]
    np.testing.assert_allclose(
        [dict(_read_submission(outputs["none"]))[i] for i in ids], plain, atol=1e-6
    )
    np.testing.assert_allclose(
        [dict(_read_submission(outputs["flip"]))[i] for i in ids],
        (plain + mirrored) / 2,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="tta='twice'"):
        predict_lib.predict(str(model_path), str(folder), str(tmp_path / "x.csv"), tta="twice")


def _sideways_photo(orientation: int) -> bytes:
    """64 wide x 32 tall as stored: left half white, right half black; EXIF ``orientation``.

    Shown upright, orientation 6 (turn right) puts the white half on top, 8 (turn left)
    the black half. Read without EXIF, the top half is half white, half black.
    """
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied(tmp_path):
    model_path = _brightness_model(tmp_path / "m" / "model.keras", top_half=True)
    folder = tmp_path / "test1"
    folder.mkdir()
    _write(folder / "1.jpg", _sideways_photo(6))  # white on top when upright: a dog
    _write(folder / "2.jpg", _sideways_photo(8))  # black on top: a cat
    output = tmp_path / "submission.csv"
    predict_lib.predict(str(model_path), str(folder), str(output))
    labels_by_id = dict(_read_submission(output))
    assert labels_by_id["1"] > 0.95 and labels_by_id["2"] < 0.05


def test_pixel_limit_before_decoding(model_path, tmp_path):
    folder = tmp_path / "test1"
    folder.mkdir()
    _write(folder / "1.jpg", _jpeg(215, seed=1))
    huge = png_claiming(9000)
    assert len(huge) < 1000
    _write(folder / "2.png", huge)
    output = tmp_path / "submission.csv"
    summary = predict_lib.predict(str(model_path), str(folder), str(output))
    assert summary == {**summary, "predicted": 1, "bad_images": 1}
    assert [(e["id"], e["reason"]) for e in _sidecar(output, "bad_images")] == [("2", HUGE)]
    # The file holds one pixel: a decode would have failed as a corrupt PNG instead.
    assert dict(_read_submission(output))["2"] == 0.5


def test_a_photo_the_decoder_refuses_fails_only_itself(model_path, tmp_path):
    # Its header is intact, so it reaches the decoder, in one batch with the others: the
    # call fails, and only this photo may be refused, in make_records' words.
    folder = tmp_path / "test1"
    folder.mkdir()
    for image_id in DOGS:
        _write(folder / f"{image_id}.jpg", _jpeg(215, seed=image_id))
    for image_id in CATS:
        _write(folder / f"{image_id}.jpg", _jpeg(40, seed=image_id))
    damaged = make_damaged_jpeg()
    _write(folder / "5.jpg", damaged)
    output = tmp_path / "submission.csv"
    summary = predict_lib.predict(str(model_path), str(folder), str(output))
    assert summary == {**summary, "predicted": 6, "bad_images": 1}
    with pytest.raises(BadImage) as words:
        stored_photo.prepare(damaged)
    assert str(words.value).startswith("corrupt JPEG (")
    assert [(e["id"], e["reason"]) for e in _sidecar(output, "bad_images")] == [
        ("5", str(words.value))
    ]
    labels_by_id = dict(_read_submission(output))
    assert all(labels_by_id[str(image_id)] > 0.99 for image_id in DOGS)
    assert all(labels_by_id[str(image_id)] < 0.01 for image_id in CATS)
    assert labels_by_id["5"] == 0.5


def test_big_jpeg_is_predicted_reduced_not_a_bad_image(model_path, tmp_path):
    folder = tmp_path / "test1"
    folder.mkdir()
    _write(folder / "1.jpg", _jpeg(215, seed=1))
    make_big_jpeg(folder / "2.jpg")  # 12000x12000: decoded at 1/2 (or less), as make_records
    output = tmp_path / "submission.csv"
    summary = predict_lib.predict(str(model_path), str(folder), str(output))
    assert summary == {**summary, "predicted": 2, "bad_images": 0}
    assert [image_id for image_id, _ in _read_submission(output)] == ["1", "2"]


def _kaggle_like_folder(folder):
    """Images that exercise every branch of ``records.photo.prepare``."""
    folder.mkdir()
    _write(folder / "cat.1.jpg", make_jpeg_bytes(150, 200, seed=1))  # downscaled
    _write(folder / "cat.2.jpg", make_jpeg_bytes(375, 500, seed=2))  # downscaled more
    _write(folder / "dog.1.jpg", make_jpeg_bytes(40, 44, seed=3))  # kept as it is
    _write(folder / "dog.2.jpg", _sideways_photo(6))  # turned upright
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (90, 70, 3), np.uint8)).save(
        png, "PNG"
    )
    _write(folder / "dog.3.jpg", png.getvalue())  # converted (and downscaled)


@pytest.mark.slow
@pytest.mark.parametrize("max_short_side", [48, None])
def test_predict_pixels_equal_validation_pixels(tmp_path, max_short_side):
    """Train/serve skew: predict feeds the model exactly what validation feeds it."""
    folder = tmp_path / "train"
    _kaggle_like_folder(folder)
    records_dir = tmp_path / "records"
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(folder),),
            output_dir=str(records_dir),
            val_fraction=0.5,
            max_short_side=max_short_side,
            jpeg_quality=85,
            single_process=True,
            progress=False,
        )
    )
    manifest = Manifest.load(str(records_dir))
    validation = [
        image.numpy()
        for split in manifest.splits
        if manifest.num_examples(split)
        for images_batch, _ in dataset_lib.eval_dataset(
            manifest, 2, split=split, image_size=IMAGE_SIZE
        )
        for image in images_batch
    ]
    settings = manifest.store_settings
    assert (settings.max_short_side, settings.jpeg_quality) == (max_short_side, 85)
    items = unlabelled.list_unlabelled(str(folder)).images
    bad = {}
    predicted = [
        image.numpy() for _, image in predict_lib.image_dataset(items, settings, IMAGE_SIZE, bad)
    ]
    assert bad == {} and len(predicted) == len(validation) == 5
    # The same multiset of images, bit for bit (eval order is by shard, not by name).
    assert sorted(p.tobytes() for p in predicted) == sorted(v.tobytes() for v in validation)
    if max_short_side:
        # What predict did before: the original JPEG at a DCT downscale. Not the same.
        original = (folder / "cat.2.jpg").read_bytes()
        old = decode.decode_and_resize(tf.constant(original), IMAGE_SIZE).numpy()
        assert old.tobytes() not in {v.tobytes() for v in validation}


def _metrics_beside(model_path, records_dir):
    model_path.parent.mkdir(parents=True, exist_ok=True)
    (model_path.parent / "metrics.json").write_text(
        json.dumps({"settings": {"records_dir": str(records_dir)}})
    )


@pytest.mark.slow
def test_cli_uses_records_dir(tmp_path, capsys):
    model_path = _brightness_model(tmp_path / "m" / "model.keras")
    _test_folder(tmp_path / "test1")
    _metrics_beside(model_path, tmp_path / "gone")  # overridden by --records_dir
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "manifest.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "settings": {"max_short_side": 24, "jpeg_quality": 70},
                "splits": {},
            }
        )
    )
    config = predict_cli.PredictConfig(
        model=str(model_path),
        input=str(tmp_path / "test1"),
        output=str(tmp_path / "s.csv"),
        records_dir=str(tmp_path / "records"),
    )
    assert predict_cli.main(config) == 0
    out = capsys.readouterr().out
    assert "7 of 8 images predicted, 1 bad" in out and "4 other files ignored" in out


def test_missing_or_empty_input_is_a_clear_error(model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder or zip"):
        predict_lib.predict(str(model_path), str(tmp_path / "nope"), str(tmp_path / "s.csv"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "Thumbs.db").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds no image files"):
        predict_lib.predict(str(model_path), str(tmp_path / "junk"), str(tmp_path / "s.csv"))


def test_submission_id():
    assert predict_lib.submission_id("test1/17.jpg") == "17"
    assert predict_lib.submission_id(os.fsdecode(b"test1/\xff.jpg")) == "\\xff"
    assert sorted(["10", "9", "x"], key=predict_lib._sort_key) == ["9", "10", "x"]


@pytest.mark.slow
def test_litert_answers_as_keras_and_lists_the_same_bad_photos(model_path, tmp_path, litert_images):
    folder = tmp_path / "test1"
    _test_folder(folder)  # 7 photos, one not an image
    _write(folder / "6.jpg", make_damaged_jpeg())  # refused by the decoder only
    outputs = {}
    for engine in ("keras", "litert"):
        output = tmp_path / engine / "submission.csv"
        summary = predict_lib.predict(str(model_path), str(folder), str(output), engine=engine)
        assert summary == {**summary, "engine": engine, "predicted": 7, "bad_images": 2}
        outputs[engine] = output
    assert sum(litert_images) == 1 + 7  # the check on one image, then the good photos
    keras_rows, lite_rows = (_read_submission(outputs[e]) for e in ("keras", "litert"))
    assert [i for i, _ in lite_rows] == [i for i, _ in keras_rows]
    np.testing.assert_allclose([p for _, p in lite_rows], [p for _, p in keras_rows], atol=2e-6)
    assert _sidecar(outputs["litert"], "bad_images") == _sidecar(outputs["keras"], "bad_images")
    assert [f for f in os.listdir(model_path.parent) if f.endswith(".tflite")]  # cached


@pytest.mark.slow
def test_litert_int8_is_calibrated_on_the_training_records(tmp_path, litert_images):
    # Bright dogs and dark cats, as in the test folder: int8 clips activations to the
    # ranges the calibration images reach.
    folder = tmp_path / "train"
    folder.mkdir()
    for seed in range(6):
        _write(folder / f"dog.{seed}.jpg", _jpeg(215, seed=seed))
        _write(folder / f"cat.{seed}.jpg", _jpeg(40, seed=seed + 10))
    records_dir = tmp_path / "records"
    writer.convert(
        writer.ConvertOptions(
            inputs=(str(folder),),
            output_dir=str(records_dir),
            val_fraction=0.25,
            single_process=True,
            progress=False,
        )
    )
    model_path = _brightness_model(tmp_path / "model" / "model.keras")
    _metrics_beside(model_path, records_dir)
    _test_folder(tmp_path / "test1")
    output = tmp_path / "int8.csv"
    summary = predict_lib.predict(
        str(model_path), str(tmp_path / "test1"), str(output), engine="litert_int8"
    )
    assert summary == {**summary, "engine": "litert_int8", "predicted": 7, "bad_images": 1}
    assert sum(litert_images) == 7
    labels_by_id = dict(_read_submission(output))
    # Quantized, so close rather than equal; every bright photo a dog, every dark one a cat.
    assert all(labels_by_id[str(image_id)] > 0.9 for image_id in (*DOGS, 4))
    assert all(labels_by_id[str(image_id)] < 0.1 for image_id in CATS)
    assert [f for f in os.listdir(model_path.parent) if f.startswith("litert_int8_")]


def test_litert_int8_without_the_training_records_says_which_flag(model_path, tmp_path):
    _test_folder(tmp_path / "test1")
    with pytest.raises(FileNotFoundError, match="calibrates the int8 model .* --records_dir="):
        predict_lib.predict(
            str(model_path), str(tmp_path / "test1"), str(tmp_path / "s.csv"), engine="litert_int8"
        )


def test_an_unknown_engine_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "test1").mkdir()
    with pytest.raises(ValueError, match="expected one of auto, keras, litert, litert_int8"):
        predict_lib.predict(
            str(tmp_path / "missing.keras"), str(tmp_path / "test1"), "s.csv", engine="int4"
        )
