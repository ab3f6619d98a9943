"""Timing: passes over an iterator by wall clock and process CPU time, round-robin.

Every benchmark here times the same way: a fresh iterator, ``warmup_batches`` untimed,
then ``num_batches`` timed by wall clock (``time.perf_counter``) and by this process's
CPU time (``time.process_time``, every thread of this process and none of the others'),
``repeats`` passes, the median pass reported. CPU time per image is the steadier figure
on a shared machine: other processes' load slows the wall clock but does not add to the
CPU a variant spends per image.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from absl import logging

# Makes a fresh iterator over batches: (images, labels) tuples or arrays.
MakeIterator = Callable[[], Iterator[Any]]


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_load() -> list[float]:
    """1/5/15-minute load averages (how busy the shared machine was)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def timed_command(command: list[str]) -> dict[str, float]:
    """Runs ``command`` to the end (TensorFlow's C++ lines hidden) and times it by wall
    clock, with the 1-minute load before and after (a command's own children count).

    Raises:
      subprocess.CalledProcessError: The command failed.
    """
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def machine_cpu_ticks(stat: str = "/proc/stat") -> dict[str, int]:
    """The machine's CPU time so far, in clock ticks (``/proc/stat``'s first line):
    ``busy`` (user, nice, system, irq, softirq), ``idle`` (idle, iowait) and ``steal``
    (time the hypervisor ran something else). Empty where there is no ``/proc/stat``."""
    try:
        with open(stat, encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


class CpuMeter:
    """How busy the cores were over a stretch of work: this process's cores (its CPU
    seconds over the wall seconds: 2.0 is both cores of a 2-core machine all the time) and
    the machine's shares of busy, idle and stolen time. A pass that runs slowly while its
    process keeps fewer cores busy was waiting, not out-computed by another process.

        meter = CpuMeter()
        ...work...
        meter.read()  # {"process_cores": 1.9, "machine_busy": 0.97, ...}
    """

    def __init__(self, stat: str = "/proc/stat"):
        self._stat = stat
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._ticks = machine_cpu_ticks(stat)

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        reading = {"process_cores": round((time.process_time() - self._cpu) / max(wall, 1e-9), 2)}
        ticks = machine_cpu_ticks(self._stat)
        if ticks and self._ticks:
            spent = {k: ticks[k] - self._ticks[k] for k in ticks}
            total = max(sum(spent.values()), 1)
            reading.update({f"machine_{k}": round(v / total, 3) for k, v in spent.items()})
        return reading


@dataclasses.dataclass(frozen=True)
class PassTiming:
    """One timed pass: wall seconds, images delivered, process CPU seconds meanwhile."""

    seconds: float
    images: int
    cpu_seconds: float


def batch_length(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


def time_pass(make_iterator: MakeIterator, num_batches: int, warmup_batches: int) -> PassTiming:
    """Times ``num_batches`` from a fresh iterator after ``warmup_batches`` untimed.

    The CPU figure is slightly blurred at the edges by prefetching (work done ahead
    during the warm-up or past the last timed batch).
    """
    iterator = make_iterator()
    try:
        for _ in range(warmup_batches):
            next(iterator)
        images = 0
        start = time.perf_counter()
        cpu_start = time.process_time()
        for _ in range(num_batches):
            images += batch_length(next(iterator))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    finally:
        # Stop background threads (tf.data's, an enqueuer's) before the next variant runs.
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        del iterator
    return PassTiming(seconds, images, cpu_seconds)


def time_round_robin(
    jobs: Mapping[str, tuple[MakeIterator, int]], repeats: int, warmup_batches: int
) -> dict[str, list[PassTiming]]:
    """``repeats`` rounds, each timing every job once: name -> its passes.

    Round-robin rather than one job after another: on a shared machine load drifts over
    minutes, and interleaving spreads it evenly over the jobs instead of penalising
    whichever ran during a busy spell.

    Args:
      jobs: name -> (iterator factory, timed batches per pass).
      repeats: Rounds.
      warmup_batches: Untimed batches before each pass.
    """
    timings: dict[str, list[PassTiming]] = {name: [] for name in jobs}
    for round_index in range(repeats):
        for name, (make_iterator, num_batches) in jobs.items():
            logging.info(
                "round %d/%d: timing %s (%d batches)", round_index + 1, repeats, name, num_batches
            )
            timings[name].append(time_pass(make_iterator, num_batches, warmup_batches))
    return timings


def summarise(passes: list[PassTiming]) -> dict[str, Any]:
    """The median pass (by rate: passes may differ by a partial batch) and the spread."""
    _, seconds, images = sorted((p.images / p.seconds, p.seconds, p.images) for p in passes)[
        len(passes) // 2
    ]
    cpu_ms = [1000 * p.cpu_seconds / p.images for p in passes]
    return {
        "images": images,
        "seconds": seconds,
        "images_per_sec": images / seconds,
        "repeat_seconds": [p.seconds for p in passes],
        "cpu_ms_per_image": sorted(cpu_ms)[len(cpu_ms) // 2],
        "repeat_cpu_ms_per_image": cpu_ms,
    }


def _stand_in_model(image_size: int):
    """A small CNN whose train step costs a few ms: a stand-in for a model's step."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def measure_input_wait(
    make_iterator: MakeIterator, num_batches: int, image_size: int, warmup: int = 3
) -> dict[str, float]:
    """Times ``next(iterator)`` against a 2-layer stand-in CNN's train step, batch by batch.

    The wait is what a step spends blocked on the iterator; with a prefetching pipeline
    that keeps up it is near zero. The stand-in costs a few ms per step, far less than
    VGG16; ``benchmark_train`` measures the real model.
    """
    model = _stand_in_model(image_size)
    iterator = make_iterator()
    for _ in range(warmup):
        images, labels = next(iterator)
        model.train_on_batch(images, labels)
    wait = compute = 0.0
    for _ in range(num_batches):
        start = time.perf_counter()
        images, labels = next(iterator)
        fetched = time.perf_counter()
        model.train_on_batch(images, labels)
        wait += fetched - start
        compute += time.perf_counter() - fetched
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    return {
        "batches": num_batches,
        "input_wait_ms_per_step": 1000 * wait / num_batches,
        "compute_ms_per_step": 1000 * compute / num_batches,
        "input_wait_percent": 100 * wait / (wait + compute),
    }
