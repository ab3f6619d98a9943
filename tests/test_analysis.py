"""Tests for the data audit's neither and duplicate sides (trainer.audit.neighbours,
trainer.audit.neither, trainer.audit.analysis, trainer.audit.report) and, on the real sample
with planted problems, the known answers of all three issue types.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from benchmarks import near_copies
from conftest import REPO_ROOT, SAMPLE_DIR, convert, write_records
from records import exclude
from trainer import audit_data
from trainer.audit import analysis, neighbours, neither, report

NEITHER_LIST = REPO_ROOT / "tests" / "data" / "neither_photos.txt"


def known_neither() -> list[str]:
    lines = NEITHER_LIST.read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- neighbours -------------------------------------------------------------------------


@pytest.mark.parametrize("block", [7, 1024])
def test_nearest_matches_brute_force_block_by_block(block, monkeypatch):
    monkeypatch.setattr(neighbours, "BLOCK", block)
    vectors = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    found = neighbours.nearest(vectors, k=4)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    expected = np.argsort(-full, axis=1)[:, :4]
    np.testing.assert_array_equal(found.index, expected)
    np.testing.assert_allclose(found.similarity, np.take_along_axis(full, expected, 1), rtol=1e-5)
    assert not (found.index == np.arange(50)[:, None]).any()


def test_nearest_needs_more_images_than_neighbours():
    with pytest.raises(ValueError, match="3 images: the neighbour scores need more than 3"):
        neighbours.nearest(np.ones((3, 2)), k=3)


def test_duplicates_group_chains_and_keep_the_val_copy():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 16))
    # 0 ~ 1 ~ 2 (a chain), 3 ~ 4; 5 alone. Noise small enough to stay above 0.9.
    vectors = np.stack(
        [base[0], base[0] + 0.05, base[0] + 0.1, base[3], base[3] + 0.05, base[5]]
    ) + rng.normal(0, 0.01, (6, 16))
    splits = ("train", "train", "val", "train", "train", "train")
    names = ("a", "b", "c", "e", "d", "f")
    found = neighbours.duplicates(neighbours.nearest(vectors, 3), splits, names, 0.9)
    assert {(i, j) for i, j, _ in found.pairs} >= {(0, 1), (1, 2), (3, 4)}
    assert all(s >= 0.9 for _, _, s in found.pairs)
    # One per group kept: the val member (2), else the smallest name ("d" = 4).
    assert found.keep_instead.tolist() == [2, 2, -1, 4, -1, -1]
    assert found.closest[5] == -1 and found.closest[3] == 4


def test_duplicates_keep_the_held_out_copy_val_first_then_test():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3, 16))
    # Groups {0, 1}, {2, 3}, {4, 5}; each member's name sorts before the one to keep.
    vectors = np.repeat(base, 2, axis=0) + rng.normal(0, 0.01, (6, 16))
    splits = ("train", "test", "test", "val", "train", "train")
    names = ("a", "b", "c", "d", "e", "f")
    found = neighbours.duplicates(neighbours.nearest(vectors, 2), splits, names, 0.9)
    # train + test: the test copy stays, so the test split is as it was (a crossing pair
    # either way: the report flags it). test + val: val. Both train: the smaller name.
    assert found.keep_instead.tolist() == [1, -1, 3, -1, -1, 4]


# --- neither ----------------------------------------------------------------------------


def test_percentile_rank_gives_ties_one_rank():
    ranks = neither.percentile_rank(np.array([0.1, 0.5, 0.5, 0.9]))
    np.testing.assert_allclose(ranks, [0.25, 0.75, 0.75, 1.0])


def test_animal_probability_is_the_mass_on_dogs_and_cats():
    kernel = np.zeros((2, 1000))
    kernel[0, 200] = 10.0  # feature 0 -> a dog breed
    kernel[1, 900] = 10.0  # feature 1 -> not an animal class
    animal = neither.animal_probability(np.array([[1.0, 0.0], [0.0, 1.0]]), kernel, np.zeros(1000))
    assert animal[0] > 0.9 and animal[1] < 0.05


def test_neither_needs_both_signals():
    # Row 0: unlike the others and no animal; row 1: unlike the others but an animal.
    rng = np.random.default_rng(2)
    vectors = np.concatenate([rng.normal(size=(2, 8)) * 5, 1 + rng.normal(0, 0.1, (200, 8))])
    kernel = np.zeros((8, 1000))
    bias = np.zeros(1000)
    bias[250] = 8.0  # every image a dog ...
    kernel[:, 900] = 0.0
    near = neighbours.nearest(vectors, neither.OUTLIER_NEIGHBOURS)
    kernel_0 = kernel.copy()
    kernel_0[:, 900] = np.sign(vectors[0]) * 20  # ... except row 0, which is "something else"
    found = neither.scores(vectors, near, (kernel_0, bias))
    assert found.flagged[0] and not found.flagged[1:].any()
    assert np.argmax(found.score) == 0
    # Without an ImageNet head the outlier alone ranks, and nothing is flagged.
    alone = neither.scores(vectors, near, None)
    assert set(np.argsort(-alone.score)[:2]) == {0, 1} and not alone.flagged.any()


# --- bad input --------------------------------------------------------------------------


def _examples(splits) -> dict:
    from conftest import make_jpeg_bytes

    return {
        split: [(make_jpeg_bytes(seed=i), i % 2, f"{i}.jpg") for i in range(count)]
        for split, count in splits.items()
    }


def test_an_empty_folder_a_folder_without_val_and_a_model_folder_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json in .*empty.*make_records"):
        analysis.load_records(str(empty))
    nothing = tmp_path / "nothing"
    write_records(nothing, {"train": [], "val": []})
    with pytest.raises(ValueError, match="lists no records"):
        analysis.load_records(str(nothing))
    no_val = tmp_path / "no_val"
    write_records(no_val, _examples({"train": 12}))
    with pytest.raises(ValueError, match="has no val split.*--val_fraction > 0"):
        analysis.load_records(str(no_val))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.keras").write_bytes(b"")
    (model / "metrics.json").write_text(json.dumps({"settings": {"records_dir": "build/rec"}}))
    with pytest.raises(ValueError, match=r"is a model folder .*trained on --records_dir=build/rec"):
        analysis.load_records(str(model))
    with_val = tmp_path / "with_val"
    write_records(with_val, _examples({"train": 12, "val": 4}))
    assert analysis.load_records(str(with_val)).num_examples("val") == 4


# --- the real sample, with planted problems ---------------------------------------------


# Half the sample (cat.1-1500, dog.1-1500, and every known neither photo): the base's
# pass over 6,000 photos at 224 px is most of this file's time (110 s of a 13-minute suite
# on a quiet machine); over half of them the known answers are still ranks among 3,000+.
# docs/evaluating.md has the whole sample's figures (every neither photo in the first 9).
SUBSET_LAST = 1500


def subset(names: list[str]) -> list[str]:
    known = set(known_neither())
    return [n for n in names if int(n.split(".")[1]) <= SUBSET_LAST or n in known]


@pytest.fixture(scope="module")
def sample_audit(tmp_path_factory):
    """Half the sample with 40 planted near-duplicates and 20 planted label flips,
    converted and audited at 224 px with the offline ImageNet base."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    root = tmp_path_factory.mktemp("audit_sample")
    names = subset(sorted(n for n in os.listdir(SAMPLE_DIR) if n.endswith(".jpg")))
    planted = near_copies.build_folder(
        str(SAMPLE_DIR), str(root / "train"), avoid=known_neither(), names=names, seed=0
    )
    convert([root / "train"], root / "records")
    # num_show=0: no pictures (a second decode pass; test_labels.py checks them).
    config = audit_data.AuditConfig(
        records_dir=str(root / "records"), output_dir=str(root / "audit"), num_show=0
    )
    assert audit_data.main(config) == 0
    rows = _read_csv(root / "audit" / report.CSV_NAME)
    pairs = _read_csv(root / "audit" / report.PAIRS_NAME)
    return root / "audit", planted, rows, pairs


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@pytest.mark.slow
def test_photos_of_neither_class_rank_first(sample_audit):
    _, _, rows, _ = sample_audit
    rank = {_base(r["filename"]): int(r["neither_rank"]) for r in rows}
    known = known_neither()
    assert len(known) >= 8
    assert {name: rank[name] for name in known if rank[name] > 30} == {}
    flagged = {_base(r["filename"]) for r in rows if "neither" in r["flagged"].split(";")}
    assert set(known) <= flagged


@pytest.mark.slow
def test_planted_near_duplicates_are_paired(sample_audit):
    _, planted, _, pairs = sample_audit
    planted_pairs = {frozenset((a, b)) for a, b, _ in planted.pairs}
    reported = [frozenset((_base(p["filename"]), _base(p["other"]))) for p in pairs[:100]]
    found = planted_pairs & set(reported)
    false = [p for p in reported if p not in planted_pairs]
    assert len(found) >= 38, sorted(map(sorted, planted_pairs - found))
    assert len(false) <= 5, false
    # Pairs that straddle train and val say so.
    for p in pairs:
        assert p["crosses_split"] == str(int(p["split"] != p["other_split"]))


@pytest.mark.slow
def test_planted_label_flips_rank_first(sample_audit):
    _, planted, rows, _ = sample_audit
    rank = {_base(r["filename"]): int(r["label_rank"]) for r in rows}
    flips = [name for name, _ in planted.flips]
    assert len(flips) == 20
    assert sum(rank[name] <= 40 for name in flips) >= 18, sorted(rank[n] for n in flips)


@pytest.mark.slow
def test_the_report_keeps_its_contract(sample_audit):
    audit_dir, planted, rows, pairs = sample_audit
    assert set(report.COLUMNS) >= {
        "filename",
        "split",
        "given_label",
        "label_rank",
        "label_score",
        "neither_rank",
        "neither_score",
        "duplicate_of",
        "flagged",
    }
    assert list(rows[0]) == list(report.COLUMNS)
    # One row per image converted (the subset's photos and 40 planted copies), ranks 1..N
    # per type.
    num_photos = len(subset(os.listdir(SAMPLE_DIR)))
    assert len(rows) == num_photos + 40 == len({r["filename"] for r in rows})
    for column in ("label_rank", "neither_rank"):
        assert sorted(int(r[column]) for r in rows) == list(range(1, len(rows) + 1))
    kinds = {k for r in rows for k in r["flagged"].split(";") if k}
    assert kinds <= set(exclude.ISSUE_TYPES)
    # Each flagged duplicate names the copy kept instead; the names are the records'.
    by_name = {r["filename"]: r for r in rows}
    for r in rows:
        if "duplicate" in r["flagged"].split(";"):
            assert r["duplicate_of"] in by_name
            assert "duplicate" not in by_name[r["duplicate_of"]]["flagged"]
    assert {r["split"] for r in rows} == {"train", "val"}  # converted without a test split
    page = (audit_dir / report.INDEX_NAME).read_text()
    assert f"<td>near-duplicate pairs</td><td>{len(pairs)}</td>" in page
    crossing = sum(p["crosses_split"] == "1" for p in pairs)
    assert f"<td>pairs straddling train and val</td><td>{crossing}</td>" in page


@pytest.mark.slow
def test_make_records_leaves_out_what_the_audit_flags(sample_audit, tmp_path):
    # The audit's CSV straight into make_records --exclude: the chosen types' rows are
    # skipped as "excluded by audit", every other image is converted as before.
    audit_dir, _, rows, _ = sample_audit
    source = audit_dir.parent / "train"
    result = convert(
        [source],
        tmp_path / "clean",
        exclude=str(audit_dir / report.CSV_NAME),
        exclude_issues=("neither", "duplicate"),
    )
    chosen = {
        r["filename"] for r in rows if {"neither", "duplicate"} & set(r["flagged"].split(";"))
    }
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    excluded = {s["source"] for s in manifest["skipped"] if s["reason"] == "excluded by audit"}
    assert len(excluded) == len(chosen) >= 8 + 40
    assert {_base(name) for name in excluded} == {_base(name) for name in chosen}
    written = sum(info["num_examples"] for info in manifest["splits"].values())
    assert written == len(rows) - len(chosen)
    assert result.state == "fresh"
