"""Tests for records/plan.py, the conversion's first pass: the split is a function of an
image's bytes alone, copies are kept once and listed, shards are counted and filled as
asked, every input is accounted for, and the digest names exactly these settings."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest

from conftest import placed_splits, write_kaggle_folder
from records import plan, schema
from records.convert_options import ConvertOptions


class _NoProgress:
    def update(self, *args) -> None:
        pass

    def close(self) -> None:
        pass


def _plan(*inputs, **settings) -> plan.Plan:
    options = ConvertOptions(
        inputs=tuple(str(i) for i in inputs),
        output_dir="unused",
        single_process=True,
        **{"val_fraction": 0.5, **settings},
    )
    return plan.make_plan(options, map, lambda what, total: _NoProgress())


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path):
    """``train/`` with 12 cats and 12 dogs, all different."""
    write_kaggle_folder(tmp_path / "train", num_per_class=12)
    return tmp_path / "train"


def test_the_same_inputs_give_the_same_plan(folder):
    first, second = _plan(folder), _plan(folder)
    assert first.digest == second.digest
    assert first.shards == second.shards
    placed = placed_splits(first)
    assert len(placed) == 24
    # Both splits are used (val_fraction 0.5 over 24 images).
    assert set(placed.values()) == {"train", "val"}


def test_the_split_follows_the_bytes_not_the_name_or_the_company(folder, tmp_path):
    """An image lands in the split its sha256 picks, whatever else is converted with it and
    whatever it is called: a renamed subset is split exactly as the whole folder was."""
    whole = _plan(folder)
    split_by_sha = {
        sha: split for split, shards in whole.shards.items() for shard in shards for _, sha in shard
    }
    for sha, split in split_by_sha.items():
        assert plan.split_of(sha, 0.5) == split

    subset = tmp_path / "other" / "train"
    subset.mkdir(parents=True)
    for path in sorted(folder.iterdir())[::3]:
        label, number, ext = path.name.split(".")
        shutil.copy(path, subset / f"{label}.{int(number) + 100}.{ext}")
    for split, shards in _plan(subset).shards.items():
        for shard in shards:
            for _, sha in shard:
                assert split_by_sha[sha] == split


def test_split_of_compares_integers_at_the_edges():
    assert plan.split_of("0" * 64, 0.2) == "val"
    assert plan.split_of("f" * 64, 0.2) == "train"
    assert plan.split_of("0" * 64, 0.0) == "train"  # val_fraction 0: no val at all.
    boundary = f"{int(0.25 * 2**64):016x}" + "0" * 48
    assert plan.split_of(boundary, 0.25) == "train"  # The rule is strict: <, not <=.


def test_copies_are_kept_once_and_listed(folder):
    original = folder / "cat.3.jpg"
    shutil.copy(original, folder / "cat.30.jpg")
    shutil.copy(original, folder / "cat.31.jpg")
    the_plan = _plan(folder)
    assert the_plan.duplicates == [
        {
            "sha256": _sha(original),
            # The smallest name is kept.
            "kept": "train/cat.3.jpg",
            "dropped": ["train/cat.30.jpg", "train/cat.31.jpg"],
        }
    ]
    placed = placed_splits(the_plan)
    assert "train/cat.3.jpg" in placed
    assert "train/cat.30.jpg" not in placed and "train/cat.31.jpg" not in placed
    assert the_plan.inputs_found == 26


def test_copies_labelled_both_ways_are_all_skipped(folder):
    shutil.copy(folder / "cat.3.jpg", folder / "dog.99.jpg")
    the_plan = _plan(folder)
    skipped = {entry["source"]: entry["reason"] for entry in the_plan.skipped}
    assert set(skipped) == {"train/cat.3.jpg", "train/dog.99.jpg"}
    assert all("carry different labels" in reason for reason in skipped.values())
    assert not set(skipped) & set(placed_splits(the_plan))
    assert the_plan.duplicates == []


def test_every_input_is_in_exactly_one_place(folder):
    shutil.copy(folder / "dog.0.jpg", folder / "dog.50.jpg")  # a duplicate
    (folder / "cat.77.jpg").write_bytes(b"")  # empty
    (folder / "notes.txt").write_text("not an image name")  # no label
    the_plan = _plan(folder)
    placed = placed_splits(the_plan)
    dropped = [name for group in the_plan.duplicates for name in group["dropped"]]
    skipped = [entry["source"] for entry in the_plan.skipped]
    assert "train/cat.77.jpg" in skipped
    assert any("empty" in e["reason"] for e in the_plan.skipped)
    assert dropped == ["train/dog.50.jpg"]
    assert len(placed) + len(dropped) + len(skipped) == the_plan.inputs_found == 27


def test_requested_shard_counts_are_filled_evenly_in_sha_order(folder):
    the_plan = _plan(folder, train_shards=3, val_shards=2)
    assert [len(the_plan.shards[s]) for s in the_plan.splits] == [3, 2]
    assert the_plan.shard_files("train") == [schema.shard_name("train", i, 3) for i in range(3)]
    for split in the_plan.splits:
        sizes = [len(shard) for shard in the_plan.shards[split]]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) > 0
        shas = [sha for shard in the_plan.shards[split] for _, sha in shard]
        assert shas == sorted(shas)
    assert the_plan.settings["train_shards"] == 3 and the_plan.settings["val_shards"] == 2


def test_default_shard_counts_are_the_minimum_for_small_splits_and_never_empty(folder):
    the_plan = _plan(folder)
    for split in the_plan.splits:
        count = len(_placed_in(the_plan, split))
        assert len(the_plan.shards[split]) == min(plan.MIN_SHARDS[split], count)
    assert plan.default_num_shards("train", 0, 0) == 0
    assert plan.default_num_shards("train", 3, 10) == 3
    assert plan.default_num_shards("val", 1000, 10) == plan.MIN_SHARDS["val"]
    big = 10 * plan.TARGET_SHARD_BYTES + 1
    assert plan.default_num_shards("train", 1000, big) == 11


def _placed_in(the_plan: plan.Plan, split: str) -> list[str]:
    return [name for name, where in placed_splits(the_plan).items() if where == split]


@pytest.mark.parametrize(
    "change",
    [
        {"val_fraction": 0.3},
        {"train_shards": 5},
        {"val_shards": 3},
        {"max_short_side": 160},
        {"jpeg_quality": 80},
        {"test_fraction": 0.2},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_digest_changes_with_every_setting_the_output_depends_on(folder, change):
    base = _plan(folder)
    assert _plan(folder, **change).digest != base.digest


def test_the_digest_ignores_settings_the_output_does_not_depend_on(folder):
    base = _plan(folder)
    options = ConvertOptions(inputs=(str(folder),), output_dir="unused", val_fraction=0.5)
    again = plan.make_plan(
        dataclasses.replace(options, num_workers=1, verify=True, overwrite=True),
        map,
        lambda what, total: _NoProgress(),
    )
    assert again.digest == base.digest


# --- the held-out test split -------------------------------------------------------------


def test_three_way_split_edges_are_exact_integers():
    def at(position: int) -> str:
        return f"{position:016x}" + "0" * 48

    # 0.1 + 0.2 rounds up (0.30000000000000004) and 0.2 + 0.05 down: a bound taken from the
    # float sum would be 512 above, or 256 below, the sum of the two integer bounds.
    for val_fraction, test_fraction in ((0.1, 0.2), (0.2, 0.05)):
        val_bound = int(val_fraction * 2**64)
        test_bound = val_bound + int(test_fraction * 2**64)
        assert plan.split_of(at(val_bound - 1), val_fraction, test_fraction) == "val"
        assert plan.split_of(at(val_bound), val_fraction, test_fraction) == "test"
        assert plan.split_of(at(test_bound - 1), val_fraction, test_fraction) == "test"
        assert plan.split_of(at(test_bound), val_fraction, test_fraction) == "train"
    assert plan.split_of("0" * 64, 0.0, 0.3) == "test"  # no val: test starts at 0
    assert plan.split_of("f" * 64, 0.2, 0.3) == "train"


def test_a_test_split_takes_only_former_train_images_and_val_stays():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3000)]
    before = [plan.split_of(sha, 0.2) for sha in shas]
    after = [plan.split_of(sha, 0.2, 0.1) for sha in shas]
    assert [a == "val" for a in after] == [b == "val" for b in before]
    moved = [(b, a) for b, a in zip(before, after) if a != b]
    assert moved and set(moved) == {("train", "test")}
    assert 220 < sum(a == "test" for a in after) < 380  # ~10 %
    # A larger test split contains the smaller one: it only grows into train.
    larger = [plan.split_of(sha, 0.2, 0.25) for sha in shas]
    assert all(b == "test" for a, b in zip(after, larger) if a == "test")


def test_a_plan_with_a_test_split(folder, tmp_path):
    without, with_test = (
        _plan(folder, val_fraction=0.3),
        _plan(folder, val_fraction=0.3, test_fraction=0.3),
    )
    before, after = placed_splits(without), placed_splits(with_test)
    assert set(after) == set(before)
    assert {n for n, s in after.items() if s == "val"} == {
        n for n, s in before.items() if s == "val"
    }
    tested = {n for n, s in after.items() if s == "test"}
    assert tested and all(before[n] == "train" for n in tested)
    # Byte-identical copies are one image: one sha256, so one split, never straddling.
    shutil.copy(folder / "dog.4.jpg", folder / "dog.40.jpg")
    copies = _plan(folder, val_fraction=0.3, test_fraction=0.3)
    assert placed_splits(copies) == after  # dog.40 dropped as a duplicate of dog.4
    assert with_test.splits == ("train", "val", "test")
    assert with_test.settings["test_fraction"] == 0.3
    assert with_test.settings["split_rule"] == plan.SPLIT_RULE_WITH_TEST
    assert len(with_test.shards["test"]) == min(plan.MIN_SHARDS["test"], len(tested))
    assert with_test.settings["test_shards"] == len(with_test.shards["test"])
    assert with_test.digest != without.digest
    asked = _plan(folder, val_fraction=0.3, test_fraction=0.3, test_shards=3)
    assert asked.shard_files("test") == [schema.shard_name("test", i, 3) for i in range(3)]
    assert asked.digest != with_test.digest


def test_without_test_fraction_the_plan_is_todays(folder):
    """No test split: the settings (hence the digest), splits and shard names are exactly
    those conversions had before --test_fraction existed, so their folders still resume."""
    the_plan = _plan(folder)
    assert the_plan.digest == _plan(folder, test_fraction=0.0).digest
    assert the_plan.splits == ("train", "val") and "test" not in the_plan.shards
    # The settings as they were, written out: one more key, or another rule text, and
    # every earlier conversion would be "a different conversion" to a rerun.
    assert the_plan.settings == {
        "inputs": [str(folder)],
        "val_fraction": 0.5,
        "split_rule": "int(sha256[:16], 16) < int(val_fraction * 2**64) -> val",
        "max_short_side": None,
        "jpeg_quality": 90,
        "train_shards": 4,
        "val_shards": 2,
    }
    # An empty val split keeps its entry (and settings.val_shards 0), as it always did.
    no_val = _plan(folder, val_fraction=0.0)
    assert no_val.shards["val"] == [] and no_val.settings["val_shards"] == 0


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"val_fraction": 0.6, "test_fraction": 0.4},
            r"val_fraction=0.6 \+ --test_fraction=0.4 = 1 leaves nothing for train",
        ),
        ({"val_fraction": 0.0, "test_fraction": 1.0}, "test_fraction=1.0 must be < 1"),
        ({"test_fraction": -0.1}, r"test_fraction=-0.1 must be >= 0"),
        ({"test_shards": 2}, "test_shards=2 needs --test_fraction > 0"),
    ],
)
def test_test_fraction_bounds(settings, message):
    with pytest.raises(ValueError, match=message):
        ConvertOptions(inputs=("x",), output_dir="y", **settings)
    # Just below 1 together is allowed.
    ConvertOptions(inputs=("x",), output_dir="y", val_fraction=0.5, test_fraction=0.49)
