"""Smoke test of pipeline.benchmark on tiny data: files and fields, never timings."""

from __future__ import annotations

import json
import pathlib

import pytest
from absl import app

from pipeline import benchmark
from records import schema
from tests.conftest import write_kaggle_folder, write_records


@pytest.fixture
def kaggle_and_records(tmp_path: pathlib.Path):
    paths = write_kaggle_folder(tmp_path / "images" / "train", num_per_class=8, height=60, width=80)
    items = [
        (p.read_bytes(), schema.CLASS_NAMES.index(p.name.split(".")[0]), f"train/{p.name}")
        for p in paths
    ]
    write_records(tmp_path / "records", {"train": items, "val": items[:4]}, num_shards=2)
    return tmp_path / "images" / "train", tmp_path / "records"


def test_benchmark_writes_json_png_and_table(tmp_path, kaggle_and_records):
    images_dir, records_dir = kaggle_and_records
    config = benchmark.BenchmarkConfig(
        records_dir=str(records_dir),
        small_records_dir=str(records_dir),
        images_dir=str(images_dir),
        output_dir=str(tmp_path / "out"),
        batch_size=4,
        image_size=32,
        repeats=2,
        warmup_batches=1,
        slow_max_images=8,
        step_batches=2,
    )
    report = benchmark.run_benchmark(config)
    saved = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert (tmp_path / "out" / "benchmark.png").stat().st_size > 1000
    names = [r["name"] for r in saved["results"]]
    assert set(names) == set(benchmark.VARIANTS)
    for result in saved["results"]:
        assert result["images"] > 0 and result["seconds"] > 0
        assert result["images_per_sec"] == pytest.approx(result["images"] / result["seconds"])
        assert result["cores"] >= 1 and len(result["repeat_seconds"]) == 2
        assert result["x_legacy"] > 0 and result["x_decode_ceiling"] > 0
        assert result["cpu_ms_per_image"] > 0 and len(result["repeat_cpu_ms_per_image"]) == 2
        assert result["cpu_ms_per_image"] == sorted(result["repeat_cpu_ms_per_image"])[1]
        assert result["x_legacy_cpu"] > 0 and result["x_decode_ceiling_cpu"] > 0
    assert {t["reference"] for t in saved["targets"]} == {
        "legacy_image_data_generator",
        "image_dataset_from_directory",
        "decode_ceiling",
    }
    for target in saved["targets"]:
        assert target["cpu_ratio"] > 0 and target["cpu_met"] == (
            target["cpu_ratio"] >= target["target_ratio"]
        )
    assert [w["name"] for w in saved["input_wait"]] == list(benchmark._STEP_VARIANTS)
    for wait in saved["input_wait"]:
        assert 0 <= wait["input_wait_percent"] <= 100 and wait["compute_ms_per_step"] > 0
    table = benchmark.format_report(report)
    assert "pipeline160_train_fused" in table and "input wait per step" in table
    assert "cpu ms/img" in table and "by CPU time per image" in table


def test_benchmark_without_images_dir_skips_baselines(tmp_path, kaggle_and_records):
    _, records_dir = kaggle_and_records
    config = benchmark.BenchmarkConfig(
        records_dir=str(records_dir),
        output_dir=str(tmp_path / "out"),
        batch_size=4,
        image_size=16,
        repeats=1,
        warmup_batches=0,
        step_batches=0,
        variants=("pipeline_train_fused", "pipeline_eval", "decode_ceiling", "pipeline160_eval"),
    )
    report = benchmark.run_benchmark(config)
    assert [r["name"] for r in report["results"]] == ["pipeline_train_fused", "pipeline_eval"]
    assert "no --images_dir" in report["skipped"]["decode_ceiling"]
    assert "pipeline160_eval" in report["skipped"]


def test_main_rejects_bad_flags(tmp_path):
    benchmark.define_flags()
    benchmark.FLAGS.unparse_flags()
    benchmark.FLAGS(["benchmark", f"--records_dir={tmp_path / 'missing'}"])
    try:
        with pytest.raises(app.UsageError, match="not a directory"):
            benchmark.main(["benchmark"])
    finally:
        benchmark.FLAGS.unparse_flags()
