"""benchmark_train: is this host input-bound for this model? The model's demand vs the input.

  benchmark_train --records_dir=build/records --output_dir=build/benchmark_train
  benchmark_train --records_dir=... --mixed_precision=mixed_bfloat16 --jit_compile=on \\
      --batch_size=256 --steps=50                      # on a GPU

For each input variant (``benchmarks.headroom.INPUTS``) it measures, with the trainer's
own model and pipeline code: the model's training-step rate on synthetic batches already
on the device (no input cost), the same model fed by the pipeline (rate and share of
step time waiting for input), and the pipeline alone on 1 thread and on every core,
hence the host cores the model needs on this device. Writes ``benchmark_train.json`` and
``benchmark_train.png`` and prints a table. On a 2-core CPU a VGG16 step takes seconds:
keep ``--steps`` small there.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from typing import Any

import tensorflow as tf
from absl import logging

from benchmarks import headroom, timing
from benchmarks import report as report_lib
from core import settings
from records.manifest import Manifest
from trainer.training import optimizers, precision
from trainer.training import strategy as strategy_lib
from trainer.training.config import TrainConfig

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadroomConfig:
    """Settings of ``benchmark_train``; the model settings mean what ``train``'s do."""

    records_dir: str = setting(help="Records to feed from (the ones train would read).")
    output_dir: str = setting("build/benchmark_train", "Where the JSON and PNG go.")
    inputs: tuple[str, ...] = setting(
        ("stream_fused", "decode_once_host", "decode_once_accelerator"),
        "Input variants to measure.",
        choices=tuple(headroom.INPUTS),
    )
    backbone: str = setting("vgg16", "As train --backbone.")
    weights: str = setting("none", "As train --weights (speed does not depend on them).")
    freeze_layers: int | None = setting(None, "As train --freeze_layers.", minimum=0)
    image_size: int = setting(128, "As train --image_size.", minimum=32)
    batch_size: int = setting(32, "Global batch size, as train --batch_size.", minimum=1)
    mixed_precision: str = setting(
        "auto", "As train --mixed_precision.", choices=precision.POLICIES
    )
    strategy: str = setting("auto", "As train --strategy.", choices=strategy_lib.STRATEGIES)
    jit_compile: str = setting(
        "auto",
        "XLA: auto (what train does: Keras' choice, off on CPU-only hosts and under a "
        "tf.distribute strategy), on or off.",
        choices=tuple(optimizers.JIT_COMPILE),
    )
    steps: int = setting(5, "Timed training steps per measurement.", minimum=1)
    warmup_steps: int = setting(2, "Untimed steps first (tracing, compilation).", minimum=0)
    host_batches: int = setting(30, "Timed batches of the pipeline-alone measurement.", minimum=1)
    host_warmup_batches: int = setting(5, "Untimed pipeline batches first.", minimum=0)

    def __post_init__(self):
        settings.check(self)

    def train_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(
            records_dir=self.records_dir,
            model_dir=os.path.join(self.output_dir, "unused_model_dir"),
            backbone=self.backbone,
            weights=self.weights,
            freeze_layers=self.freeze_layers,
            image_size=self.image_size,
            batch_size=self.batch_size,
            mixed_precision=self.mixed_precision,
            strategy=self.strategy,
            jit_compile=self.jit_compile,
            tensorboard=False,
            seed=0,
            **overrides,
        )


def _device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return f"CPU only ({timing.cores()} cores)"


def run_benchmark(config: HeadroomConfig) -> dict[str, Any]:
    """Measures every requested input; writes benchmark_train.json and .png."""
    os.makedirs(config.output_dir, exist_ok=True)
    load_before = timing.machine_load()
    manifest = Manifest.load(config.records_dir)
    base = config.train_config()
    strategy = strategy_lib.make_strategy(base.strategy, base.tpu)
    strategy_lib.check_batch_size(base.batch_size, strategy.num_replicas_in_sync)
    policy = precision.apply_policy(precision.choose_policy(base.mixed_precision, strategy))
    configs = {
        name: config.train_config(**headroom.INPUTS[name].settings) for name in config.inputs
    }
    # Every model is timed before any pipeline exists, so no input thread competes with it.
    models: dict[str, tuple] = {}
    for train_config in configs.values():
        kind = headroom.model_kind(train_config)
        if kind not in models:
            models[kind] = headroom.measure_model(
                train_config,
                strategy,
                steps=config.steps,
                warmup_steps=config.warmup_steps,
            )
    results = []
    for name, train_config in configs.items():
        results.append(
            headroom.measure_input(
                headroom.INPUTS[name],
                train_config,
                manifest,
                strategy,
                *models[headroom.model_kind(train_config)],
                steps=config.steps,
                warmup_steps=config.warmup_steps,
                host_batches=config.host_batches,
                host_warmup=config.host_warmup_batches,
            )
        )
        gc.collect()  # ends the fed iterator's threads before the next input
    report = {
        "settings": dataclasses.asdict(config),
        "machine": {
            "device": _device(),
            "cores": timing.cores(),
            "tensorflow": tf.__version__,
            "load_before": load_before,
            "load_after": timing.machine_load(),
        },
        "model": {
            "strategy": strategy_lib.strategy_name(strategy),
            "replicas": strategy.num_replicas_in_sync,
            "dtype_policy": policy,
        },
        "models": {kind: synthetic for kind, (_, synthetic) in models.items()},
        "inputs": results,
    }
    json_path = os.path.join(config.output_dir, "benchmark_train.json")
    png_path = os.path.join(config.output_dir, "benchmark_train.png")
    report_lib.write_json(report, json_path)
    _plot(report, png_path)
    report["files"] = {"json": json_path, "png": png_path}
    logging.info("wrote %s and %s", json_path, png_path)
    return report


def _plot(report: dict[str, Any], path: str) -> None:
    names, values, model_side = [], [], []
    for kind, synthetic in report["models"].items():
        names.append(f"model alone ({kind})")
        values.append(synthetic["images_per_sec"])
        model_side.append(True)
    for r in report["inputs"]:
        names.append(f"{r['name']}: model fed")
        values.append(r["fed"]["images_per_sec"])
        model_side.append(True)
        for host in r["host"]:
            names.append(f"{r['name']}: input alone, {host['threads']} thread(s)")
            values.append(host["images_per_sec"])
            model_side.append(False)
    machine, model = report["machine"], report["model"]
    report_lib.plot_bars(
        names,
        values,
        path,
        f"Model demand vs input supply (images/s, log scale)\n{machine['device']}, "
        f"{model['dtype_policy']}, batch {report['settings']['batch_size']}, "
        f"{report['settings']['backbone']}",
        "images / second",
        model_side,
        log=True,
    )


def format_table(report: dict[str, Any]) -> str:
    machine, model = report["machine"], report["model"]
    lines = [
        f"device: {machine['device']}; {model['strategy']} x{model['replicas']}, "
        f"policy {model['dtype_policy']}; load average before/after "
        f"{machine['load_before']} / {machine['load_after']}",
    ]
    for kind, s in report["models"].items():
        lines.append(
            f"model alone ({kind}, XLA {'on' if s['jit_compile'] else 'off'}): "
            f"{s['images_per_sec']:.1f} images/s ({s['ms_per_step']:.0f} ms/step)"
        )
    lines.append(
        f"{'input':26s} {'model img/s':>11s} {'fed img/s':>10s} {'fed/model':>9s} "
        f"{'wait %':>7s} {'host 1t img/s':>13s} {'cpu ms/img':>10s} {'host all img/s':>14s} "
        f"{'cores needed':>12s}"
    )
    for r in report["inputs"]:
        one, every = r["host"][0], r["host"][-1]
        lines.append(
            f"{r['name']:26s} {r['model_images_per_sec']:11.1f} "
            f"{r['fed']['images_per_sec']:10.1f} {r['fed_over_model']:9.2f} "
            f"{100 * r['fed']['input_wait_share']:7.1f} {one['images_per_sec']:13.0f} "
            f"{one['cpu_ms_per_image']:10.3f} {every['images_per_sec']:14.0f} "
            f"{r['host_cores_needed']:12.3f}"
        )
    return "\n".join(lines)


def main(config: HeadroomConfig) -> int:
    if not os.path.isdir(config.records_dir):
        raise FileNotFoundError(f"--records_dir={config.records_dir} is not a directory")
    print(format_table(run_benchmark(config)))
    return 0


def run() -> None:
    settings.run(HeadroomConfig, main, __name__)


if __name__ == "__main__":
    run()
