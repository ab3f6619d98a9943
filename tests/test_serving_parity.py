"""One photo, one answer: make_records, evaluate, predict, the SavedModel and TFLite agree.

On real photos of the sample: records are made from 480 of them, an EfficientNet-Lite0
features model (offline ImageNet weights) is trained on them and exported once per module.
Then the same photos' original files, and copies of some of them in every format and
orientation make_records accepts, go to every path, and the answers are compared.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import SAMPLE_DIR, png_claiming, subprocess_env
from pipeline import photos
from records import writer
from records.convert_options import ConvertOptions
from trainer.inference import evaluation, prediction
from trainer.serving import export as export_lib
from trainer.serving.tflite_client import TFLiteClient
from trainer.training import fit
from trainer.training.config import TrainConfig

pytestmark = pytest.mark.slow

PER_CLASS = 240  # 480 photos; val_fraction 0.45 leaves ~216 val photos
IMAGE_SIZE = 96


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


_TURNS = {  # what to do to upright pixels so that EXIF ``orientation`` turns them back
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # PIL turns counter-clockwise; 6 turns clockwise back
    8: Image.Transpose.ROTATE_270,
}


def _turned_png(data: bytes, orientation: int) -> bytes:
    """The photo's pixels stored turned in a PNG (lossless), with an eXIf orientation tag."""
    pixels = Image.open(io.BytesIO(data)).convert("RGB")
    if _TURNS[orientation] is not None:
        pixels = pixels.transpose(_TURNS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(pixels, "PNG", exif=exif.tobytes())


def _turned(data: bytes, orientation: int) -> bytes:
    """The photo stored turned in a JPEG, tagged with the EXIF orientation that turns it upright.

    Orientation 1 is the upright reference, made the same way, so the two files differ by
    the turn alone, and decode to the same pixels once turned upright, bit for bit. A real
    photo's pixels cannot do that: two encodes of them in different orientations round
    differently (libjpeg's integer DCT runs rows then columns, which a quarter turn swaps;
    its 4:2:0 chroma averaging alternates a rounding bias along each row), and the photo
    chain's own re-encode at --jpeg_quality turns a difference of 0.2 levels into 1.1: even
    at quality 100 and 4:4:4 that moved a 96-px two-epoch model by 0.021 in P(dog)
    (dog.129, orientation 3), with the photo's own tables and 4:2:0 by 0.047. So the
    photo is shown at 1/8 of its size in flat 8x8 squares on the block grid (cropped to
    whole 16x16 blocks): a flat block is its DC coefficient alone, which libjpeg encodes
    and decodes exactly at quality 100 with 4:4:4, in any orientation.
    """
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    blocks = image.crop((0, 0, width // 16 * 16, height // 16 * 16)).reduce(8)
    pixels = blocks.resize((blocks.width * 8, blocks.height * 8), Image.Resampling.NEAREST)
    if _TURNS[orientation] is not None:
        pixels = pixels.transpose(_TURNS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(pixels, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())


def _copies(data: bytes) -> dict[str, bytes]:
    """One photo in every other format and colour layout make_records accepts."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    gray16 = (np.asarray(image.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    rgba = image.convert("RGBA")
    rgba.putalpha(200)
    return {
        "png.png": _encode(image, "PNG"),
        "png16.png": _encode(Image.fromarray(gray16), "PNG"),
        "rgba.png": _encode(rgba, "PNG"),
        "gif.gif": _encode(image, "GIF"),
        "webp.webp": _encode(image, "WEBP", quality=90),
        "cmyk.jpg": _encode(image.convert("CMYK"), "JPEG", quality=95),
        "gray.jpg": _encode(image.convert("L"), "JPEG", quality=95),
        "trailing.jpg": data + b"\x00camera-maker-notes" * 20,
    }


BAD_ROWS = {
    "bad_not_an_image.jpg": b"<html>404 not found</html>" * 4,
    "bad_empty.jpg": b"",
}


def _bad_rows(data: bytes) -> dict[str, bytes]:
    return {
        **BAD_ROWS,
        "bad_truncated.jpg": data[: len(data) // 2],
        "bad_bomb.png": png_claiming(30000),  # 900 MP
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    root = tmp_path_factory.mktemp("parity")
    photos_dir = root / "photos"
    photos_dir.mkdir()
    for label in ("cat", "dog"):
        for number in range(1, PER_CLASS + 1):
            name = f"{label}.{number}.jpg"
            (photos_dir / name).symlink_to(SAMPLE_DIR / name)
    records_dir = root / "records"
    writer.convert(
        ConvertOptions(
            inputs=(str(photos_dir),),
            output_dir=str(records_dir),
            max_short_side=128,
            # The least re-encoding noise make_records allows: the turned copies are
            # re-encoded when they are turned upright, the reference is not.
            jpeg_quality=95,
            val_fraction=0.45,
            progress=False,
        )
    )
    model_dir = root / "model"
    fit.train(
        TrainConfig(
            records_dir=str(records_dir),
            model_dir=str(model_dir),
            backbone="efficientnet_lite0",
            weights="imagenet",
            input_mode="features",
            augment="none",
            pooling="avg",
            image_size=IMAGE_SIZE,
            batch_size=32,
            epochs=2,
            optimizer="adam",
            learning_rate=1e-3,
            seed=1,
            tensorboard=False,
        )
    )
    model_path = model_dir / fit.MODEL_NAME
    export_dir = root / "export"
    # The float16 TFLite model only: the int8 one (test_export.py checks it) would add a
    # second converter run, ~15 s, that no test here reads.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_lib, "QUANTIZATIONS", ("float16",))
        export_lib.export(str(model_path), str(export_dir), calibration_images=16)
    assert not (export_dir / "model_int8.tflite").exists()
    evaluated = evaluation.evaluate(str(model_path), str(records_dir))

    # What goes to predict, the SavedModel and the TFLite client: the val photos' original
    # files, turned and re-formatted copies of the first few, and bad rows.
    inputs = root / "inputs"
    inputs.mkdir()
    # Stored names are relative to the input folder ("photos/cat.7.jpg").
    val_names = [pathlib.PurePath(name).name for name in evaluated.filenames]
    originals = {name: (SAMPLE_DIR / name).read_bytes() for name in val_names}
    files = dict(originals)
    for name in val_names[:6]:
        stem = name.removesuffix(".jpg")
        for orientation in (1, 3, 6, 8):
            files[f"{stem}.rot{orientation}.jpg"] = _turned(originals[name], orientation)
            files[f"{stem}.pngrot{orientation}.png"] = _turned_png(originals[name], orientation)
    for name in val_names[:2]:
        stem = name.removesuffix(".jpg")
        files.update({f"{stem}.{kind}": data for kind, data in _copies(originals[name]).items()})
    files.update(_bad_rows(originals[val_names[0]]))
    for name, data in files.items():
        (inputs / name).write_bytes(data)

    output = root / "predictions.csv"
    prediction.predict(str(model_path), str(inputs), str(output), batch_size=32)
    with open(output, newline="") as f:
        predicted = {row["id"]: float(row["label"]) for row in csv.DictReader(f)}
    bad = json.loads((root / "predictions.bad_images.json").read_text())
    # The same photos through LiteRT (--engine=litert): the frozen network's other engine.
    lite_output = root / "litert" / "predictions.csv"
    prediction.predict(str(model_path), str(inputs), str(lite_output), 32, engine="litert")
    with open(lite_output, newline="") as f:
        predicted_litert = {row["id"]: float(row["label"]) for row in csv.DictReader(f)}
    bad_litert = json.loads((root / "litert" / "predictions.bad_images.json").read_text())

    # The SavedModel from plain TensorFlow: Keras and the project unimportable.
    names = sorted(files)
    script = textwrap.dedent(
        """
        import json, sys
        sys.modules["keras"] = None
        import tensorflow as tf
        names = json.loads(open(sys.argv[2]).read())
        rows = [open(sys.argv[3] + "/" + name, "rb").read() for name in names]
        serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        out = serve(image_bytes=tf.constant(rows))
        print(json.dumps({
            "p_dog": [float(p) for p in out["p_dog"].numpy()],
            "valid": [bool(v) for v in out["valid"].numpy()],
            "status": [s.decode() for s in out["status"].numpy()],
            "class_name": [s.decode() for s in out["class_name"].numpy()],
        }))
        """
    )
    names_file = root / "names.json"
    names_file.write_text(json.dumps(names))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(export_dir / "saved_model"),
            str(names_file),
            str(inputs),
        ],
        capture_output=True,
        text=True,
        env={**subprocess_env(), "PYTHONPATH": ""},
        cwd=str(root),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(result.stdout.strip().splitlines()[-1])
    saved_model = {
        name: (p, valid, status)
        for name, p, valid, status in zip(names, saved["p_dog"], saved["valid"], saved["status"])
    }
    client = TFLiteClient(str(export_dir), "float16")
    tflite = dict(zip(names, client.predict([files[name] for name in names])))
    return {
        "evaluated": evaluated,
        "files": files,
        "predicted": predicted,
        "bad": bad,
        "predicted_litert": predicted_litert,
        "bad_litert": bad_litert,
        "saved_model": saved_model,
        "tflite": tflite,
        "val_names": val_names,
        "export_dir": export_dir,
        "records_dir": records_dir,
        "store": client.store,
    }


def _id(name: str) -> str:
    return pathlib.Path(name).stem


def test_enough_real_val_photos_and_most_larger_than_the_records(served):
    assert len(served["val_names"]) >= 200
    larger = sum(
        min(Image.open(io.BytesIO(served["files"][name])).size) > 128
        for name in served["val_names"]
    )
    assert larger > len(served["val_names"]) / 2


def test_every_file_has_its_own_id(served):
    # predict's CSV is keyed by the file name's stem: the copies must not share one.
    assert len({_id(name) for name in served["files"]}) == len(served["files"])


def test_saved_model_on_raw_bytes_matches_predict(served):
    good = [name for name in served["files"] if not name.startswith("bad_")]
    gaps = {
        name: abs(served["saved_model"][name][0] - served["predicted"][_id(name)]) for name in good
    }
    assert all(served["saved_model"][name][1] for name in good)
    worst = max(gaps, key=gaps.get)
    print(
        f"SavedModel vs predict: {len(gaps)} photos, max |dP| {gaps[worst]:.2e} ({worst}), "
        f"median {np.median(list(gaps.values())):.2e}"
    )
    assert gaps[worst] <= 0.01, (worst, gaps[worst])
    # The same function on both sides: float round-off in the model, not pixels.
    assert np.median(list(gaps.values())) < 1e-4


def test_tflite_client_matches_predict(served):
    good = [name for name in served["files"] if not name.startswith("bad_")]
    gaps = {
        name: abs(served["tflite"][name].p_dog - served["predicted"][_id(name)]) for name in good
    }
    worst = max(gaps, key=gaps.get)
    print(
        f"TFLite float16 vs predict: max |dP| {gaps[worst]:.2e} ({worst}), "
        f"median {np.median(list(gaps.values())):.2e}"
    )
    assert gaps[worst] <= 0.02, (worst, gaps[worst])


def test_evaluate_on_records_matches_predict_on_original_files(served):
    evaluated = served["evaluated"]
    gaps = [
        abs(p - served["predicted"][_id(name)])
        for name, p in zip(evaluated.filenames, evaluated.prob_dog)
    ]
    print(
        f"evaluate (records) vs predict (original files): {len(gaps)} photos, "
        f"max |dP| {max(gaps):.2e}, median {np.median(gaps):.2e}"
    )
    assert len(gaps) >= 200 and max(gaps) <= 0.01, max(gaps)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_turned_pngs_get_the_answer_of_their_upright_original(served, orientation):
    # Lossless copies: turned upright, the pixels are the upright copy's, bit for bit.
    for name in served["val_names"][:6]:
        stem = name.removesuffix(".jpg")
        upright, turned = f"{stem}.pngrot1.png", f"{stem}.pngrot{orientation}.png"
        pairs = [
            (served["predicted"][_id(upright)], served["predicted"][_id(turned)]),
            (served["saved_model"][upright][0], served["saved_model"][turned][0]),
            (served["tflite"][upright].p_dog, served["tflite"][turned].p_dog),
        ]
        for upright_p, turned_p in pairs:
            assert abs(turned_p - upright_p) <= 1e-4, (name, upright_p, turned_p)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_turned_jpegs_are_upright_for_the_model(served, orientation):
    # The turned copy decodes, turned upright, to its reference's pixels (``_turned``): the
    # model's input must be the reference's, bit for bit, and predict and the SavedModel
    # must give each turned copy its upright P(dog). A path that ignored the EXIF tag would
    # see pixels tens of levels off.
    for name in served["val_names"][:6]:
        stem = name.removesuffix(".jpg")
        upright, turned = f"{stem}.rot1.jpg", f"{stem}.rot{orientation}.jpg"
        reference = _model_input(served["files"][upright], served["store"])
        model_input = _model_input(served["files"][turned], served["store"])
        sideways = _model_input(served["files"][turned], served["store"], ignore_orientation=True)
        gaps = [
            served["predicted"][_id(turned)] - served["predicted"][_id(upright)],
            served["saved_model"][turned][0] - served["saved_model"][upright][0],
        ]
        print(
            f"turned JPEG {name} orientation {orientation}: pixels "
            f"{np.abs(model_input - reference).mean():.2f} levels apart (sideways "
            f"{np.abs(sideways - reference).mean():.1f}), dP {gaps}"
        )
        assert np.array_equal(model_input, reference), name
        assert np.abs(sideways - reference).mean() > 15, name
        assert max(abs(gap) for gap in gaps) <= 0.01, (name, gaps)


def _model_input(data: bytes, settings, ignore_orientation: bool = False) -> np.ndarray:
    """The model's input pixels for a file, as every path prepares it (optionally with the
    EXIF orientation tag rewritten to 1: what a path that ignored it would see)."""
    if ignore_orientation:
        image = Image.open(io.BytesIO(data))
        exif = image.getexif()
        exif[0x0112] = 1
        data = _encode(image, "JPEG", quality=95, exif=exif.tobytes())
    image, status = photos.photo_input(tf.constant(data), settings, (IMAGE_SIZE, IMAGE_SIZE))
    assert int(status) == 0
    return image.numpy().astype(np.int64)


def test_every_format_gets_an_answer_everywhere(served):
    stem = served["val_names"][0].removesuffix(".jpg")
    for kind in ("png", "png16", "rgba", "gif", "webp", "cmyk", "gray", "trailing"):
        name = next(n for n in served["files"] if n.startswith(f"{stem}.{kind}."))
        assert served["saved_model"][name][1], name
        assert served["tflite"][name].valid, name
        assert _id(name) in served["predicted"] and _id(name) not in {
            entry["id"] for entry in served["bad"]
        }


def test_bad_rows_get_the_same_verdict_from_predict_and_the_saved_model(served):
    bad_by_predict = {
        pathlib.PurePath(entry["name"]).name: entry["reason"] for entry in served["bad"]
    }
    refused = {name for name, (_, valid, _) in served["saved_model"].items() if not valid}
    assert (
        set(bad_by_predict)
        == refused
        == {
            "bad_not_an_image.jpg",
            "bad_empty.jpg",
            "bad_truncated.jpg",
            "bad_bomb.png",
        }
    )
    assert served["saved_model"]["bad_empty.jpg"][2] == "empty"
    assert served["saved_model"]["bad_truncated.jpg"][2] == "truncated"
    assert served["saved_model"]["bad_bomb.png"][2] == "image too large"
    assert served["saved_model"]["bad_not_an_image.jpg"][2] == "not an image"
    assert bad_by_predict["bad_bomb.png"].startswith("image too large: 30000x30000")
    assert all(np.isnan(served["saved_model"][name][0]) for name in refused)
    assert not any(served["tflite"][name].valid for name in refused)


def test_litert_predict_gives_keras_predicts_answer_and_bad_rows(served):
    keras_answers, lite_answers = served["predicted"], served["predicted_litert"]
    assert set(lite_answers) == set(keras_answers)
    gaps = {name: abs(lite_answers[name] - keras_answers[name]) for name in keras_answers}
    worst = max(gaps, key=gaps.get)
    print(f"predict --engine=litert vs keras: max |dP| {gaps[worst]:.2e} ({worst})")
    assert gaps[worst] <= 1e-4, (worst, gaps[worst])
    # A photo that cannot be read is listed with the same reason by either engine.
    assert served["bad_litert"] == served["bad"]


def test_saved_model_gives_litert_predicts_answer(served):
    good = [name for name in served["files"] if not name.startswith("bad_")]
    gaps = [
        abs(served["saved_model"][name][0] - served["predicted_litert"][_id(name)]) for name in good
    ]
    assert max(gaps) <= 0.01
