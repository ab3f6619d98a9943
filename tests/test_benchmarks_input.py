"""benchmark_input and its modules on tiny data: files, fields and subsets, never timings."""

from __future__ import annotations

import json
import pathlib
import threading

import pytest

from benchmarks import baselines, report, timing, variants
from benchmarks import benchmark_input as benchmark
from benchmarks import images as images_lib
from conftest import (
    bar_chart,
    make_jpeg_bytes,
    run_command,
    write_kaggle_folder,
    write_records,
)
from records import schema
from records.manifest import Manifest

SERVICE_VARIANTS = ("pipeline160_train_service1", "pipeline160_train_service2")


@pytest.fixture
def kaggle_and_records(tmp_path: pathlib.Path):
    paths = write_kaggle_folder(tmp_path / "images" / "train", num_per_class=8, height=60, width=80)
    items = [
        (p.read_bytes(), schema.CLASS_NAMES.index(p.name.split(".")[0]), f"train/{p.name}")
        for p in paths
    ]
    write_records(tmp_path / "records", {"train": items, "val": items[:4]}, num_shards=2)
    return tmp_path / "images" / "train", tmp_path / "records"


def _config(tmp_path, records_dir, **overrides):
    settings = {
        "records_dir": str(records_dir),
        "output_dir": str(tmp_path / "out"),
        "batch_size": 4,
        "image_size": 32,
        "repeats": 2,
        "warmup_batches": 1,
        "slow_max_images": 8,
        "step_batches": 2,
        **overrides,
    }
    return benchmark.BenchmarkConfig(**settings)


@pytest.mark.slow
def test_benchmark_writes_json_png_and_table(tmp_path, kaggle_and_records, saved_figures):
    images_dir, records_dir = kaggle_and_records
    config = _config(
        tmp_path, records_dir, small_records_dir=str(records_dir), images_dir=str(images_dir)
    )
    result = benchmark.run_benchmark(config)
    saved = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    names = [r["name"] for r in saved["results"]]
    # The picture: one bar per variant with its images/s, baselines grey, the rest blue.
    bars = bar_chart(saved_figures[str(tmp_path / "out" / "benchmark.png")])
    assert [(label, width) for label, width, _ in bars] == [
        (r["name"], pytest.approx(r["images_per_sec"])) for r in saved["results"]
    ]
    grey = [label for label, _, colour in bars if colour[0] == colour[1] == colour[2]]
    assert grey == [r["name"] for r in saved["results"] if r["kind"] == "baseline"] != []
    assert names == list(variants.NAMES)
    assert len(saved["machine"]["load_before"]) == 3 and len(saved["machine"]["load_after"]) == 3
    for r in saved["results"]:
        assert r["images"] > 0 and r["seconds"] > 0
        assert r["images_per_sec"] == pytest.approx(r["images"] / r["seconds"])
        assert r["cores"] >= 1 and len(r["repeat_seconds"]) == 2
        assert r["cpu_ms_per_image"] > 0 and len(r["repeat_cpu_ms_per_image"]) == 2
        assert r["cpu_ms_per_image"] == sorted(r["repeat_cpu_ms_per_image"])[1]
        for column in ("legacy", "legacy_thr", "idfd", "ceil", "ceil_fast"):
            assert r[f"x_{column}"] > 0 and r[f"x_{column}_cpu"] > 0
        # The slow variants time the slow subset (8 images = 2 batches), the rest all 16.
        assert r["images"] == (8 if variants.VARIANTS[r["name"]].slow else 16)
    targets = {(t["variant"], tuple(t["references"])) for t in saved["targets"]}
    assert targets == {(t.variant, t.references) for t in benchmark.TARGETS if t.variant in names}
    for target in saved["targets"]:
        assert target["reference"] in target["references"]
        assert target["met"] == (target["ratio"] >= target["target_ratio"])
        assert target["cpu_ratio"] > 0
        assert target["cpu_met"] == (target["cpu_ratio"] >= target["target_ratio"])
    assert [w["name"] for w in saved["input_wait"]] == [
        name for name in variants.NAMES if variants.VARIANTS[name].input_wait
    ]
    for wait in saved["input_wait"]:
        assert 0 <= wait["input_wait_percent"] <= 100 and wait["compute_ms_per_step"] > 0
    table = report.format_table(result)
    assert "pipeline160_train_fused" in table and "input wait per step" in table
    assert "cpu ms/img" in table and "by CPU time per image" in table and "vs ceil fast" in table


def test_benchmark_without_images_dir_skips_baselines(tmp_path, kaggle_and_records):
    _, records_dir = kaggle_and_records
    config = _config(
        tmp_path,
        records_dir,
        repeats=1,
        warmup_batches=0,
        step_batches=0,
        variants=("pipeline_train_fused", "pipeline_eval", "decode_ceiling", "pipeline160_eval"),
    )
    result = benchmark.run_benchmark(config)
    assert [r["name"] for r in result["results"]] == ["pipeline_train_fused", "pipeline_eval"]
    assert "no --images_dir" in result["skipped"]["decode_ceiling"]
    assert "no --small_records_dir" in result["skipped"]["pipeline160_eval"]
    assert result["input_wait"] == [] and result["targets"] == []


@pytest.mark.slow
def test_max_images_trims_every_variant(tmp_path, kaggle_and_records):
    images_dir, records_dir = kaggle_and_records
    config = _config(
        tmp_path,
        records_dir,
        images_dir=str(images_dir),
        small_records_dir=str(records_dir),
        max_images=9,  # -> 8, two whole batches
        slow_max_images=4,
        repeats=1,
        step_batches=0,
        variants=(
            "legacy_image_data_generator",
            "decode_ceiling",
            "pipeline_train_fused",
            "pipeline_eval",
            "pipeline160_eval",
        ),
    )
    result = benchmark.run_benchmark(config)
    assert result["images"] == {"timed": 8, "slow": 4}
    by_name = {r["name"]: r["images"] for r in result["results"]}
    assert by_name == {
        "legacy_image_data_generator": 4,
        "decode_ceiling": 8,
        "pipeline_train_fused": 8,
        "pipeline_eval": 8,
        "pipeline160_eval": 8,
    }


def test_subsets_are_seeded_random_and_records_are_trimmed(tmp_path, kaggle_and_records):
    _, records_dir = kaggle_and_records
    manifest = Manifest.load(str(records_dir))
    split = images_lib.read_split(manifest, "train")
    assert len(split) == 16 and len({image.key for image in split}) == 16
    first = images_lib.choose_subset(split, 6, seed=0)
    assert first == images_lib.choose_subset(list(reversed(split)), 6, seed=0)
    assert first != images_lib.choose_subset(split, 6, seed=1)
    assert first != sorted(split, key=lambda image: image.key)[:6]  # not simply the first N
    assert images_lib.choose_subset(split, None, seed=0) == sorted(split, key=lambda i: i.key)

    keys = {image.key for image in first}
    trimmed = images_lib.trimmed_records(manifest, "train", keys, tmp_path / "trimmed")
    assert trimmed.num_examples("train") == 6
    assert len(trimmed.split("train").shards) == len(manifest.split("train").shards)
    assert {image.key for image in images_lib.read_split(trimmed, "train")} == keys
    assert sum(trimmed.splits["train"].class_counts.values()) == 6


def test_small_records_with_other_images_fail_clearly(tmp_path, kaggle_and_records):
    images_dir, records_dir = kaggle_and_records
    other = [(make_jpeg_bytes(seed=700 + i), i % 2, f"train/x.{i}.jpg") for i in range(16)]
    write_records(tmp_path / "other", {"train": other})
    config = _config(tmp_path, records_dir, small_records_dir=str(tmp_path / "other"))
    with pytest.raises(ValueError, match="do not hold the same images: 16 only in the first"):
        benchmark.run_benchmark(config)


def test_threaded_legacy_generator_yields_batches_and_stops_its_threads(kaggle_and_records):
    images_dir, _ = kaggle_and_records
    paths = sorted(images_dir.glob("*.jpg"))
    labels = [schema.CLASS_NAMES.index(p.name.split(".")[0]) for p in paths]
    threads_before = set(threading.enumerate())
    make_iterator, note = baselines.legacy_generator(paths, labels, 24, 4, workers=2)
    assert note == ""
    passed = timing.time_pass(make_iterator, num_batches=6, warmup_batches=1)  # > one epoch
    assert passed.images == 24
    # Its threads end once the pass is over: joined, each ends (no waiting for a while).
    started = set(threading.enumerate()) - threads_before
    for thread in started:
        thread.join(timeout=60)  # Only a guard against a thread that never ends.
        assert not thread.is_alive(), f"{thread.name} still running"


def test_targets_use_the_fastest_reference():
    results = [
        {"name": "gen", "images_per_sec": 10.0, "cpu_ms_per_image": 100.0},
        {"name": "gen_threads", "images_per_sec": 20.0, "cpu_ms_per_image": 120.0},
        {"name": "fast", "images_per_sec": 250.0, "cpu_ms_per_image": 5.0},
    ]
    report.add_ratios(results, {"gen": "g", "gen_threads": "g thr"})
    assert results[2]["x_g"] == 25.0 and results[2]["x_g_thr"] == 12.5
    assert results[2]["x_g_cpu"] == 20.0 and results[2]["x_g_thr_cpu"] == 24.0
    [checked] = report.check_targets(
        results, [report.Target("fast", ("gen", "gen_threads", "absent"), 15.0)]
    )
    assert checked["reference"] == "gen_threads" and checked["ratio"] == 12.5
    assert not checked["met"]
    assert checked["cpu_reference"] == "gen" and checked["cpu_ratio"] == 20.0
    assert checked["cpu_met"]
    assert report.check_targets(results, [report.Target("absent", ("gen",), 1.0)]) == []


def test_registry_rejects_malformed_variants():
    def build(inputs):
        raise AssertionError

    with pytest.raises(ValueError, match="kind"):
        variants.Variant("x", "", "other", build)
    with pytest.raises(ValueError, match="column"):
        variants.Variant("x", "", variants.BASELINE, build)
    with pytest.raises(ValueError, match="needs"):
        variants.Variant("x", "", variants.PIPELINE, build, needs=("gpu",))
    assert all(v.column for v in variants.BASELINES.values())


def test_config_checks_and_cli_errors(tmp_path):
    with pytest.raises(ValueError, match="max_images=2 is smaller than batch_size=4"):
        benchmark.BenchmarkConfig(records_dir="x", batch_size=4, max_images=2)
    with pytest.raises(ValueError, match="variants='nope'"):
        benchmark.BenchmarkConfig(records_dir="x", variants=("nope",))
    result = run_command("benchmarks.benchmark_input", f"--records_dir={tmp_path / 'missing'}")
    assert result.returncode == 2
    assert "error: --records_dir=" in result.stderr
    assert "is not a directory" in result.stderr and "Traceback" not in result.stderr
