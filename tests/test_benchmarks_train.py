"""benchmark_train on tiny records: the trainer's real model and pipelines, fields and files."""

from __future__ import annotations

import json

import pytest

from benchmarks import benchmark_train, headroom
from conftest import bar_chart
from trainer.models import model as model_lib


@pytest.fixture
def report(tiny_records, tmp_path, saved_figures):
    config = benchmark_train.HeadroomConfig(
        records_dir=str(tiny_records),
        output_dir=str(tmp_path / "out"),
        inputs=("stream_fused", "decode_once_accelerator"),
        image_size=32,
        batch_size=8,
        steps=2,
        warmup_steps=1,
        host_batches=3,
        host_warmup_batches=1,
    )
    return config, benchmark_train.run_benchmark(config)


@pytest.mark.slow
def test_headroom_report_files_and_fields(report, tmp_path, saved_figures):
    config, result = report
    saved = json.loads((tmp_path / "out" / "benchmark_train.json").read_text())
    # The picture: one bar per model and per input measurement, the JSON's numbers, the
    # model side (demand, fed) blue and the input alone grey.
    bars = bar_chart(saved_figures[str(tmp_path / "out" / "benchmark_train.png")])
    expected = [(f"model alone ({k})", m["images_per_sec"]) for k, m in saved["models"].items()]
    for r in saved["inputs"]:
        expected.append((f"{r['name']}: model fed", r["fed"]["images_per_sec"]))
        expected += [
            (f"{r['name']}: input alone, {h['threads']} thread(s)", h["images_per_sec"])
            for h in r["host"]
        ]
    assert [(label, pytest.approx(width)) for label, width, _ in bars] == expected
    grey = [label for label, _, colour in bars if colour[0] == colour[1] == colour[2]]
    assert grey == [label for label, _ in expected if "input alone" in label] != []
    assert len(saved["machine"]["load_before"]) == 3 and saved["machine"]["device"]
    assert saved["model"]["dtype_policy"] == "float32"  # auto on a CPU-only host
    # One model per kind: the plain one, and the one with the decode-once crop layer first.
    assert sorted(saved["models"]) == ["decoded_crop 36px", "plain 32px"]
    for model in saved["models"].values():
        assert model["images_per_sec"] > 0 and model["steps"] == 2
        assert model["jit_compile"] is False  # what train gets on a CPU-only host
    assert [r["name"] for r in saved["inputs"]] == ["stream_fused", "decode_once_accelerator"]
    for r in saved["inputs"]:
        assert r["fed"]["images_per_sec"] > 0 and 0 <= r["fed"]["input_wait_share"] <= 1
        assert [h["threads"] for h in r["host"]] == sorted({1, r["host"][-1]["threads"]})
        one_thread = r["host"][0]["images_per_sec"]
        assert r["host_cores_needed"] == pytest.approx(r["model_images_per_sec"] / one_thread)
        assert r["fed_over_model"] == pytest.approx(
            r["fed"]["images_per_sec"] / r["model_images_per_sec"]
        )
    first_pass = {r["name"]: r["decode_once_first_pass_seconds"] for r in saved["inputs"]}
    assert first_pass["stream_fused"] is None and first_pass["decode_once_accelerator"] > 0
    table = benchmark_train.format_table(result)
    assert "cores needed" in table and "model alone (plain 32px" in table


@pytest.mark.slow
def test_the_model_is_the_one_train_builds(report):
    config, result = report
    train_config = config.train_config(**headroom.INPUTS["stream_fused"].settings)
    expected = model_lib.build_model(train_config.model_config())
    plain = result["models"]["plain 32px"]
    assert plain["weights"] == len(expected.weights)
    assert plain["trainable_weights"] == len(expected.trainable_weights)


def test_input_shapes():
    config = benchmark_train.HeadroomConfig(records_dir="r", image_size=128)
    accelerator = config.train_config(**headroom.INPUTS["decode_once_accelerator"].settings)
    host = config.train_config(**headroom.INPUTS["decode_once_host"].settings)
    assert headroom.input_shape(accelerator) == (144, 144, 3)
    assert headroom.input_shape(host) == (128, 128, 3)
