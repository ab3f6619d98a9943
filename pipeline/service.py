"""pipeline_service: a tf.data service dispatcher or worker, for ``train --data_service``.

  pipeline_service --role=dispatcher --port=5050
  pipeline_service --role=worker --dispatcher_address=HOST:5050 --port=5051   # per worker host

When a training host cannot decode and augment as fast as its accelerators consume
(``benchmark_train`` says whether it can), ``train --data_service=grpc://HOST:5050``
moves the whole input chain (``pipeline.dataset.train_dataset``) onto the workers: each
worker reads the shards, decodes, augments and batches, and the trainer only receives
finished uint8 batches. Workers need the records at the same path (or a shared
filesystem such as GCS). Each process serves until it is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses

import tensorflow as tf
from absl import logging

from core import settings

setting = settings.setting

ROLES: tuple[str, ...] = ("dispatcher", "worker")
_GRPC = "grpc://"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings of ``pipeline_service``."""

    role: str = setting(
        help="What to start: the dispatcher (one) or a worker (many).", choices=ROLES
    )
    port: int = setting(0, "Port to serve on (0: a free one, logged).", minimum=0, maximum=65535)
    dispatcher_address: str | None = setting(
        None, "Worker only: the dispatcher's HOST:PORT (grpc:// optional)."
    )
    worker_address: str | None = setting(
        None,
        "Worker only: the HOST:PORT trainers reach this worker at (%port% stands for the "
        "port); default localhost:%port%, so set it when trainers run on other hosts.",
    )
    worker_timeout_ms: int | None = setting(
        None,
        "Dispatcher only: a worker without a heartbeat for this long is dropped and its "
        "tasks end (TensorFlow's default when unset).",
        minimum=1,
    )
    heartbeat_interval_ms: int | None = setting(
        None,
        "Worker only: how often it reports to the dispatcher (TF's default when unset).",
        minimum=1,
    )

    def __post_init__(self):
        settings.check(self)
        if self.role == "worker" and not self.dispatcher_address:
            raise ValueError("dispatcher_address is required for --role=worker (HOST:PORT)")


def start_dispatcher(
    port: int = 0, worker_timeout_ms: int | None = None
) -> tf.data.experimental.service.DispatchServer:
    """Starts a dispatcher in this process; its ``target`` is ``grpc://localhost:PORT``."""
    return tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(
            port=port,
            worker_timeout_ms=worker_timeout_ms,
            # Missing workers are only looked for in the dispatcher's maintenance pass,
            # every job_gc_check_interval_ms (10 minutes by default): check twice per
            # timeout, or a dead worker's tasks outlive the timeout by minutes.
            job_gc_check_interval_ms=worker_timeout_ms // 2 if worker_timeout_ms else None,
        )
    )


def start_worker(
    dispatcher_address: str,
    port: int = 0,
    worker_address: str | None = None,
    heartbeat_interval_ms: int | None = None,
) -> tf.data.experimental.service.WorkerServer:
    """Starts a worker in this process, registered with the dispatcher."""
    return tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher_address.removeprefix(_GRPC),
            worker_address=worker_address,
            port=port,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
    )


def start_local_cluster(num_workers: int, cleanup: contextlib.ExitStack) -> str:
    """A dispatcher and ``num_workers`` workers in this process, stopped by ``cleanup``.

    For benchmarks and tests on one machine. Returns the dispatcher's ``grpc://`` address.
    """
    dispatcher = start_dispatcher()
    cleanup.callback(dispatcher.stop)
    for _ in range(num_workers):
        worker = start_worker(dispatcher.target)
        # Registered after the dispatcher, so stopped before it (ExitStack is LIFO).
        cleanup.callback(worker.stop)
    return dispatcher.target


def main(config: ServiceConfig) -> int:
    if config.role == "dispatcher":
        server = start_dispatcher(config.port, config.worker_timeout_ms)
        address = server.target
    else:
        server = start_worker(
            config.dispatcher_address,
            config.port,
            config.worker_address,
            config.heartbeat_interval_ms,
        )
        address = server._address  # noqa: SLF001 - the only way to learn a port-0 choice
    logging.info("%s serving at %s", config.role, address)
    # One line on stdout for scripts (and tests) that wait for the server to be up.
    print(f"pipeline_service: {config.role} serving at {address}", flush=True)
    server.join()
    return 0


def run() -> None:
    settings.run(ServiceConfig, main, __name__)


if __name__ == "__main__":
    run()
