"""The tf.data service for real: a dispatcher and two worker processes on 127.0.0.1 feeding
``train --data_service``, and what happens when a worker is killed mid-epoch; and, in this
process, the batches the service delivers compared with the local pipeline's.

Every process is killed in ``finally``. Every wait is for an event (a line a process
prints, a process ending), never for an amount of time.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import (
    REPO_ROOT,
    OutputWatcher,
    alternating_examples,
    free_ports,
    run_process,
    subprocess_env,
    train_command,
    train_runner_command,
    write_records,
)
from pipeline import dataset, service
from records.manifest import Manifest

SMALL = [
    # small_cnn, not the default VGG16 (14.7 M weights): the trainer is the client under
    # test, not its model; a smaller one starts and saves in seconds less per run.
    "--backbone=small_cnn",
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
        self.outputs: dict[str, OutputWatcher] = {}
        # The dispatcher's own log lines ("Registering new worker", "Lost worker").
        self.env = subprocess_env(TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="dispatcher_impl=1")

    def start(self, name: str, *flags: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.service", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=REPO_ROOT,
        )
        self.processes[name] = process
        self.outputs[name] = OutputWatcher(process.stdout, self.log_dir / f"{name}.log")
        self.outputs[name].wait_for("serving at")
        return process

    def log(self, name: str) -> str:
        return self.outputs[name].text()

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for name, process in self.processes.items():
            process.wait(timeout=30)
            self.outputs[name].close()


@contextlib.contextmanager
def _cluster(tmp_path, worker_timeout_ms: int):
    cluster = _Cluster(tmp_path)
    try:
        # Each port is reserved just before its process starts: free_ports' reservation
        # lasts a minute (TIME_WAIT), and each start waits for the process to serve.
        [dispatcher_port] = free_ports(1)
        cluster.start(
            "dispatcher",
            "--role=dispatcher",
            f"--port={dispatcher_port}",
            f"--worker_timeout_ms={worker_timeout_ms}",
        )
        worker_ports = []
        for index in range(2):
            [port] = free_ports(1)
            cluster.start(f"worker{index}", *_worker_flags(dispatcher_port, port))
            worker_ports.append(port)
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
    examples = {"train": alternating_examples(num_train, 0), "val": alternating_examples(8, 900)}
    write_records(tmp_path / "records", examples)
    return tmp_path / "records"


def test_free_ports_are_kept_from_other_binds_but_a_service_binds_them():
    """conftest.free_ports reserves its ports for the child that serves on them: a plain
    bind (what another process asking for a free port does) is refused, the tf.data
    service's gRPC server binds them."""
    dispatcher_port, worker_port = free_ports(2)
    for port in (dispatcher_port, worker_port):
        with contextlib.closing(socket.socket()) as other:
            with pytest.raises(OSError) as refused:
                other.bind(("127.0.0.1", port))
            assert refused.value.errno == errno.EADDRINUSE
    dispatcher = service.start_dispatcher(dispatcher_port)
    try:
        worker = service.start_worker(dispatcher.target, worker_port)
        try:
            assert dispatcher.target == f"grpc://localhost:{dispatcher_port}"
            assert worker._address == f"localhost:{worker_port}"  # noqa: SLF001
        finally:
            worker.stop()
    finally:
        dispatcher.stop()


def test_worker_requires_a_dispatcher():
    with pytest.raises(ValueError, match="dispatcher_address is required"):
        service.ServiceConfig(role="worker")


@pytest.mark.slow
def test_train_reads_from_two_service_workers(tmp_path):
    records_dir = _records(tmp_path)
    with _cluster(tmp_path, worker_timeout_ms=5000) as (cluster, port, _):
        result = run_process(
            train_command(
                records_dir,
                tmp_path / "model",
                *SMALL,
                "--epochs=1",
                "--steps_per_epoch=2",
                f"--data_service=grpc://127.0.0.1:{port}",
                "--data_service_mode=parallel_epochs",
            ),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"tf.data service at grpc://127.0.0.1:{port}" in result.stderr
        assert cluster.log("dispatcher").count("Registering new worker") == 2
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and metrics["settings"]["data_service"]


@pytest.mark.slow
def test_killed_worker_stalls_its_pass_until_one_returns_at_its_address(tmp_path):
    """What we observed (and document in docs/pipeline.md): killing a worker does not fail
    the run. The job (in parallel_epochs mode one for the whole fit, over the chain
    repeated on each worker) has a task on the dead worker; the client keeps retrying the
    dead address and the stream stalls there. A worker started again at the same address
    picks the task up and training finishes. (After --worker_timeout_ms the dispatcher
    drops the worker; a long timeout here keeps the dead worker in the job for the whole
    test, so the stall is certain.)

    The test sees the stall as events: the trainer reports each batch (through
    tests/train_runner.py) and logs each failed attempt to reach the dead worker.
    """
    records_dir = _records(tmp_path)
    model_dir = tmp_path / "model"
    # 24 images = 3 batches per worker and pass: 6 per pass with both workers, 3 per pass
    # once one is dead; 24 steps need several passes.
    flags = [*SMALL, "--epochs=3", "--steps_per_epoch=8", "--seed=1"]
    with _cluster(tmp_path, worker_timeout_ms=600_000) as (cluster, port, worker_ports):
        events_read, events_write = os.pipe()
        trainer = subprocess.Popen(
            train_runner_command(
                records_dir,
                model_dir,
                *flags,
                f"--data_service=grpc://127.0.0.1:{port}",
                f"--events_fd={events_write}",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(events_write,),
            # The service client's attempts at a worker that does not answer.
            env=subprocess_env(TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="data_service_client=1"),
            cwd=REPO_ROOT,
        )
        os.close(events_write)  # The trainer holds the only write end: EOF when it ends.
        batches = OutputWatcher(os.fdopen(events_read), tmp_path / "batches.log")
        log = OutputWatcher(trainer.stderr, tmp_path / "train.log")
        try:
            batches.wait_for("batch 0 2")  # Mid-epoch 1: both workers are serving.
            cluster.processes["worker0"].send_signal(signal.SIGKILL)
            cluster.processes["worker0"].wait(timeout=30)

            # Stalled: the client keeps trying the dead worker's address, the run alive
            # and unfinished (the last of its 24 steps, epoch 2 batch 7, not reached).
            log.wait_for(f"Failed to get an element from worker localhost:{worker_ports[0]}")
            assert trainer.poll() is None, "training ended although a worker was dead"
            assert "batch 2 7" not in batches.text()

            cluster.start("worker0_again", *_worker_flags(port, worker_ports[0]))
            assert trainer.wait(timeout=600) == 0, log.text()[-3000:]
            batches.wait_for("batch 2 7")
        finally:
            if trainer.poll() is None:
                trainer.kill()
            trainer.wait(timeout=30)
            batches.close()
            log.close()
    history = pd.read_csv(model_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert json.loads((model_dir / "metrics.json").read_text())["epochs_completed"] == 3


# --- the service's batches against the local pipeline's, in this process ----------------


@pytest.fixture
def service_manifest(tmp_path) -> Manifest:
    """24 train examples in two shards (labels alternating, three heights, two widths)."""
    write_records(
        tmp_path / "records",
        {"train": alternating_examples(24, 0), "val": alternating_examples(8, 500)},
    )
    return Manifest.load(str(tmp_path / "records"))


def _epochs(batches, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """``count`` passes over ``batches``, each a list of (images, labels)."""
    return [list(batches.as_numpy_iterator()) for _ in range(count)]


def _passes(stream, count: int, length: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The first ``count`` passes of ``length`` batches from one iteration of the endless
    ``stream`` (what the trainer does: one iterator, steps counted)."""
    batches = list(stream.take(count * length).as_numpy_iterator())
    assert len(batches) == count * length
    return [batches[index * length : (index + 1) * length] for index in range(count)]


def _examples(epoch) -> collections.Counter:
    """One pass as a multiset of (image digest, label): what it holds, in any order."""
    return collections.Counter(
        (hashlib.sha256(image.tobytes()).hexdigest(), int(label))
        for images, labels in epoch
        for image, label in zip(images, labels)
    )


def _local_and_served(manifest, epochs: int):
    """``epochs`` passes of the seeded train pipeline: locally, one iteration per pass (as
    its docstring says), and through one service worker, one endless job."""
    local = _epochs(dataset.train_dataset(manifest, 4, **SEEDED), epochs)
    with contextlib.ExitStack() as cleanup:
        target = service.start_local_cluster(1, cleanup)
        stream = dataset.train_dataset(manifest, 4, data_service=target, **SEEDED)
        served = _passes(stream, epochs, len(local[0]))
    return local, served


def _assert_same_batches(served, local) -> None:
    assert len(served) == len(local) > 0
    for index, ((served_images, served_labels), (images, labels)) in enumerate(zip(served, local)):
        np.testing.assert_array_equal(served_images, images, err_msg=f"batch {index}")
        np.testing.assert_array_equal(served_labels, labels, err_msg=f"batch {index}")


# The seeded, deterministic train chain (shuffle, fused augmentation) with one worker: the
# worker runs the same graph, and one worker's single task is read in order, so the batches
# must be the local ones exactly, pixel for pixel and in the same order.
SEEDED = dict(image_size=32, augment="fused", seed=5, deterministic=True)


def test_one_service_worker_delivers_the_local_batches_exactly(service_manifest):
    local, served = _local_and_served(service_manifest, 1)
    _assert_same_batches(served[0], local[0])
    # Not vacuous: the shuffle moved examples (labels alternate in the records).
    assert not all(np.array_equal(labels, [0, 1, 0, 1]) for _, labels in local[0])


@pytest.mark.slow
def test_a_seeded_service_pipeline_reshuffles_each_epoch_as_the_local_one_does(service_manifest):
    """The service's job runs the chain repeated on the worker, so each pass reshuffles and
    re-augments as the local chain does when iterated again: batch for batch, 3 passes."""
    local, served = _local_and_served(service_manifest, 3)
    # Not vacuous: locally each pass differs from the one before (order and augmentation).
    for earlier, later in zip(local, local[1:]):
        assert any(
            not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1])
            for a, b in zip(earlier, later)
        )
    for served_epoch, local_epoch in zip(served, local):
        _assert_same_batches(served_epoch, local_epoch)


@pytest.mark.slow
def test_distributed_epoch_over_two_workers_serves_every_example_exactly_once_per_pass(
    service_manifest,
):
    """distributed_epoch is one service job per pass, and the dispatcher hands out each
    file once per job: every pass holds every example exactly once (tf.data promises at
    most once, missing a file only if a worker restarts mid-file; none does here). The
    order, and which examples share a batch, depend on which worker serves which shard, so
    compare what each pass holds. Without augmentation an example's pixels do not depend
    on its batch."""
    settings = dict(image_size=32, augment="none", seed=3)
    local = _examples(_epochs(dataset.train_dataset(service_manifest, 4, **settings), 1)[0])
    assert sum(local.values()) == 24 and len(local) == 24
    with contextlib.ExitStack() as cleanup:
        target = service.start_local_cluster(2, cleanup)
        batches = dataset.train_dataset(
            service_manifest,
            4,
            data_service=target,
            data_service_mode="distributed_epoch",
            **settings,
        )
        for epoch in _epochs(batches, 3):
            assert _examples(epoch) == local
