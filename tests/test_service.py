"""The tf.data service for real: a dispatcher and two worker processes on 127.0.0.1 feeding
``train --data_service``, and what happens when a worker is killed mid-epoch.

Every process is killed in ``finally`` and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import (
    REPO_ROOT,
    free_ports,
    make_jpeg_bytes,
    subprocess_env,
    train_command,
    write_records,
)

from pipeline import service
from records import schema

SMALL = [
    "--weights=none",
    "--image_size=32",
    "--dense_units=8",
    "--batch_size=8",
    "--notensorboard",
    "--early_stopping_patience=0",
]


class _Cluster:
    """Starts pipeline_service processes; logs go to files; all are killed on exit."""

    def __init__(self, log_dir: pathlib.Path):
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        # The dispatcher's own log lines ("Registering new worker", "Lost worker").
        self.env = subprocess_env(TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="dispatcher_impl=1")

    def start(self, name: str, *flags: str, timeout: float = 60) -> subprocess.Popen:
        log = self.log_dir / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.service", *flags],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
            )
        self.processes[name] = process
        deadline = time.monotonic() + timeout
        while "serving at" not in log.read_text():
            assert process.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{name} did not start in {timeout} s"
            time.sleep(0.1)
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=30)


@contextlib.contextmanager
def _cluster(tmp_path, worker_timeout_ms: int):
    cluster = _Cluster(tmp_path)
    try:
        dispatcher_port, *worker_ports = free_ports(3)
        cluster.start(
            "dispatcher",
            "--role=dispatcher",
            f"--port={dispatcher_port}",
            f"--worker_timeout_ms={worker_timeout_ms}",
        )
        for index, port in enumerate(worker_ports):
            cluster.start(f"worker{index}", *_worker_flags(dispatcher_port, port))
        yield cluster, dispatcher_port, worker_ports
    finally:
        cluster.stop()


def _worker_flags(dispatcher_port: int, port: int) -> list[str]:
    return [
        "--role=worker",
        f"--dispatcher_address=127.0.0.1:{dispatcher_port}",
        f"--port={port}",
        "--heartbeat_interval_ms=500",
    ]


def _records(tmp_path, num_train=24):
    def items(count, offset):
        return [
            (
                make_jpeg_bytes(40, 48, seed=offset + i),
                i % 2,
                f"{schema.CLASS_NAMES[i % 2]}.{i}.jpg",
            )
            for i in range(count)
        ]

    write_records(tmp_path / "records", {"train": items(num_train, 0), "val": items(8, 900)})
    return tmp_path / "records"


def test_worker_requires_a_dispatcher():
    with pytest.raises(ValueError, match="dispatcher_address is required"):
        service.ServiceConfig(role="worker")


def test_train_reads_from_two_service_workers(tmp_path):
    records_dir = _records(tmp_path)
    with _cluster(tmp_path, worker_timeout_ms=5000) as (cluster, port, _):
        result = subprocess.run(
            train_command(
                records_dir,
                tmp_path / "model",
                *SMALL,
                "--epochs=1",
                "--steps_per_epoch=2",
                f"--data_service=grpc://127.0.0.1:{port}",
                "--data_service_mode=parallel_epochs",
            ),
            capture_output=True,
            text=True,
            timeout=240,
            env=subprocess_env(),
            cwd=REPO_ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"tf.data service at grpc://127.0.0.1:{port}" in result.stderr
        assert cluster.log("dispatcher").count("Registering new worker") == 2
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and metrics["settings"]["data_service"]


def _progress(metadata: pathlib.Path) -> tuple[int, int] | None:
    try:
        state = json.loads(metadata.read_text())
    except (OSError, ValueError):
        return None
    return state["epoch"], state["batch"]


def test_killed_worker_stalls_its_pass_until_one_returns_at_its_address(tmp_path):
    """What we observed (and document in the README): killing a worker does not fail the
    run. A pass (a service job: one per epoch-pass in parallel_epochs mode) that has a task
    on the dead worker delivers the other workers' shares, then waits: the client keeps
    retrying the dead address. A worker started again at the same address picks the task
    up and training finishes. (Jobs created after the dispatcher drops the worker, after
    --worker_timeout_ms, run on the remaining workers; a long timeout here makes every
    pass during the test include the dead worker, so the stall is certain.)
    """
    records_dir = _records(tmp_path)
    model_dir = tmp_path / "model"
    metadata = model_dir / "backup" / "training_metadata.json"
    # 24 images = 3 batches per worker and pass: 6 per pass with both workers, 3 per pass
    # once one is dead; 24 steps need several passes.
    flags = [*SMALL, "--epochs=3", "--steps_per_epoch=8", "--backup_freq=1", "--seed=1"]
    with _cluster(tmp_path, worker_timeout_ms=600_000) as (cluster, port, worker_ports):
        trainer = subprocess.Popen(
            train_command(
                records_dir, model_dir, *flags, f"--data_service=grpc://127.0.0.1:{port}"
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "train.log", "w"),
            env=subprocess_env(),
            cwd=REPO_ROOT,
        )
        try:
            deadline = time.monotonic() + 180
            while (_progress(metadata) or (0, 0)) < (0, 2):  # mid-epoch 1
                assert trainer.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "training made no progress"
                time.sleep(0.05)
            cluster.processes["worker0"].send_signal(signal.SIGKILL)
            killed_at = _progress(metadata)

            # Stalled: alive, and no step for 20 s, before the 24 steps are done.
            last, last_change = _progress(metadata), time.monotonic()
            while time.monotonic() - last_change < 20:
                assert trainer.poll() is None, "training ended although a worker was dead"
                assert time.monotonic() < deadline, "training never stalled"
                now = _progress(metadata)
                if now != last:
                    last, last_change = now, time.monotonic()
                time.sleep(0.2)
            stalled_at = last
            assert killed_at <= stalled_at < (2, 7)

            cluster.start("worker0_again", *_worker_flags(port, worker_ports[0]))
            assert trainer.wait(timeout=240) == 0, (tmp_path / "train.log").read_text()[-3000:]
        finally:
            if trainer.poll() is None:
                trainer.kill()
            trainer.wait(timeout=30)
    history = pd.read_csv(model_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert json.loads((model_dir / "metrics.json").read_text())["epochs_completed"] == 3
