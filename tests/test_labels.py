"""Tests for the label side of the data audit (trainer.audit.features, trainer.audit.labels,
and trainer.audit.analysis on flipped labels; the neither and duplicate sides are in
test_analysis.py, the audit_data command in test_audit_data.py).

The records are made so that the two classes are trivially separable for a base with
random weights (dark "cats", bright "dogs", noisy texture), with a few labels flipped
on purpose: the audit must put exactly those at the top.
"""

from __future__ import annotations

import csv
import io
import pathlib

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import write_records
from records import schema
from records.manifest import Manifest
from trainer.audit import analysis
from trainer.audit import features as audit_features
from trainer.audit import labels as audit

# A name that is not UTF-8 (the byte 0xff, as Python gives it: a surrogate escape).
NOT_UTF8 = "cat.\udcff.flipped.jpg"
FLIPPED = {"dog.flipped.1.jpg", "cat.flipped.2.jpg", "cat.\\xff.flipped.jpg"}


def _noisy_jpeg(bright: bool, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip((190 if bright else 60) + rng.normal(0, 25, (40, 48, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_flipped_records(folder: pathlib.Path) -> pathlib.Path:
    """train 60 + val 20 images, half dark cats and half bright dogs; three labels flipped
    (two in train, one in val with a non-UTF-8 name), spread over 3 shards per split."""
    examples: dict[str, list[tuple[bytes, int, str]]] = {"train": [], "val": []}
    seed = 0
    for split, per_class in (("train", 30), ("val", 10)):
        for label, name in enumerate(schema.CLASS_NAMES):
            for _ in range(per_class):
                examples[split].append((_noisy_jpeg(label == 1, seed), label, f"{name}.{seed}.jpg"))
                seed += 1
    # A dark image labelled dog, a bright one labelled cat, in each split.
    examples["train"][5] = (_noisy_jpeg(False, 901), 1, "dog.flipped.1.jpg")
    examples["train"][40] = (_noisy_jpeg(True, 902), 0, "cat.flipped.2.jpg")
    examples["val"][3] = (_noisy_jpeg(True, 903), 0, NOT_UTF8)
    records_dir = folder / "records"
    write_records(records_dir, examples, num_shards=3)
    return records_dir


@pytest.fixture
def flipped_records(tmp_path: pathlib.Path) -> pathlib.Path:
    return write_flipped_records(tmp_path)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_planted_flips_are_ranked_first_and_flagged(flipped_records, tmp_path):
    manifest = Manifest.load(str(flipped_records))
    written = analysis.audit(
        manifest,
        str(tmp_path / "audit"),
        backbone="small_cnn",
        weights="none",
        image_size=(32, 32),
        folds=5,
        num_show=6,
        progress=False,
    )
    rows = read_csv(written.csv_path)
    # Every image has a row, once; names that are not UTF-8 are shown escaped.
    assert len(rows) == written.num_images == 80
    assert len({(r["filename"], r["split"]) for r in rows}) == 80
    # Ranks run 1..N within each type.
    for column in ("label_rank", "neither_rank"):
        assert sorted(int(r[column]) for r in rows) == list(range(1, 81))
    by_rank = sorted(rows, key=lambda r: int(r["label_rank"]))
    top = by_rank[:3]
    assert {r["filename"] for r in top} == FLIPPED
    assert {r["split"] for r in top} == {"train", "val"}
    assert all("label" in r["flagged"].split(";") for r in top)
    assert all(float(r["p_given_label"]) < 0.2 for r in top)
    assert all(r["given_label"] != r["predicted_label"] for r in top)
    # cleanlab flags the planted flips and (nearly) nothing else.
    flagged = [r["filename"] for r in by_rank if "label" in r["flagged"].split(";")]
    assert set(flagged[:3]) == FLIPPED and written.flagged["label"] <= 5
    scores = [float(r["label_score"]) for r in by_rank]
    assert scores == sorted(scores, reverse=True)
    assert written.label_accuracy >= 0.9
    # A random base has no ImageNet head: nothing is called "neither".
    assert not written.has_imagenet_head and written.flagged["neither"] == 0
    # The pictures show the suspects, from the records; the page links them.
    for picture in written.pictures.values():
        assert Image.open(picture).size[0] > 200
    page = pathlib.Path(written.index_path).read_text()
    assert all(pathlib.Path(p).name in page for p in written.pictures.values())


def test_features_stay_aligned_with_names_across_interleaved_shards(tmp_path):
    # Each image is one flat colour that encodes its number; the "base" is the mean colour.
    # All three splits: a test split is audited (and shown) like the others.
    examples = {"train": [], "val": [], "test": []}

    def split_of(number: int) -> str:
        return "train" if number < 20 else "val" if number < 25 else "test"

    for number in range(30):
        split = split_of(number)
        pixels = np.full((16, 16, 3), 8 * number, np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=100)
        examples[split].append((buffer.getvalue(), number % 2, f"img.{number}.jpg"))
    write_records(tmp_path / "records", examples, num_shards=3)
    inputs = keras.Input((8, 8, 3))
    mean_colour = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    features = audit_features.extract(
        Manifest.load(str(tmp_path / "records")), mean_colour, batch_size=4, progress=False
    )
    assert len(features) == 30 and features.vectors.shape == (30, 3)
    for vector, name, label, split in zip(
        features.vectors, features.filenames, features.labels, features.splits
    ):
        number = int(name.split(".")[1])
        np.testing.assert_allclose(vector, 8 * number, atol=2)
        assert label == number % 2 and split == split_of(number)
    # The grid's second pass finds the same records again by (split, position).
    rows = [0, 7, 19, 22, 29]
    pictures = audit_features.images_at(
        Manifest.load(str(tmp_path / "records")),
        (8, 8),
        [(features.splits[i], int(features.positions[i])) for i in rows],
        batch_size=4,
    )
    for i, picture in zip(rows, pictures):
        np.testing.assert_allclose(
            picture.mean(), 8 * int(features.filenames[i].split(".")[1]), atol=2
        )


class _RecordingHead:
    """A head that remembers which images (column 0 holds the image's index) it trained on
    and refuses to predict any of them."""

    heads: list[_RecordingHead] = []

    def __init__(self):
        self.trained_on: set[int] = set()
        self.predicted: set[int] = set()
        _RecordingHead.heads.append(self)

    def fit(self, vectors, labels):
        self.trained_on = {int(v) for v in vectors[:, 0]}
        self.classes_ = np.unique(labels)
        return self

    def predict_proba(self, vectors):
        ids = {int(v) for v in vectors[:, 0]}
        assert not ids & self.trained_on, "predicted an image this head trained on"
        self.predicted |= ids
        return np.full((len(vectors), len(self.classes_)), 1 / len(self.classes_))


def test_every_prediction_comes_from_a_head_that_never_saw_the_image():
    labels = np.array([0] * 23 + [1] * 17)
    vectors = np.stack([np.arange(40), np.random.default_rng(0).normal(size=40)], axis=1)
    _RecordingHead.heads = []
    fold_of = audit.fold_assignment(labels, folds=4, seed=7)
    probabilities = audit.out_of_fold_probabilities(vectors, labels, fold_of, _RecordingHead)
    heads = _RecordingHead.heads
    assert len(heads) == 4 and not np.isnan(probabilities).any()
    # Each image predicted exactly once, by the one head that left out its fold, and that
    # head trained on every other image.
    assert sorted(i for head in heads for i in head.predicted) == list(range(40))
    for head in heads:
        assert head.trained_on | head.predicted == set(range(40))
    # Stratified: every fold holds both classes; the seed decides the assignment.
    for fold in range(4):
        assert set(labels[fold_of == fold]) == {0, 1}
    assert not np.array_equal(fold_of, audit.fold_assignment(labels, folds=4, seed=8))


def test_a_memorising_head_still_exposes_a_flip_out_of_sample():
    # 1-nearest-neighbour remembers every training label: in-sample it would give every
    # image, flipped or not, P(given label) = 1. Out of fold, the flip's neighbours vote.
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    vectors = np.concatenate([rng.normal(-3, 1, (20, 2)), rng.normal(3, 1, (20, 2))])
    labels = np.array([0] * 20 + [1] * 20)
    labels[4] = 1  # a cat-like point labelled dog
    fold_of = audit.fold_assignment(labels, folds=5, seed=0)
    probabilities = audit.out_of_fold_probabilities(
        vectors, labels, fold_of, lambda: KNeighborsClassifier(n_neighbors=1)
    )
    given = probabilities[np.arange(40), labels]
    assert given[4] == 0.0 and np.argmin(given) == 4
    assert list(audit.find_issues(labels, probabilities)) == [4]


def test_too_few_images_per_class_for_the_folds():
    with pytest.raises(ValueError, match=r"--folds=5 needs at least 5 images of each class.*3 dog"):
        audit.fold_assignment(np.array([0] * 10 + [1] * 3), folds=5, seed=0)


def test_near_copies_share_a_fold():
    labels = np.array([0, 1] * 30)
    groups = np.arange(60) // 3  # groups of three images
    fold_of = audit.fold_assignment(labels, folds=5, seed=0, groups=groups)
    for group in range(20):
        assert len(set(fold_of[groups == group])) == 1
    for fold in range(5):
        assert set(labels[fold_of == fold]) == {0, 1}
