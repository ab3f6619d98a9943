"""Choosing the `tf.distribute` strategy, in one place, with specific errors."""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import logging

from trainer.training import keras_compat

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def configure_cpu_devices(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices (to test mirroring without GPUs).

    Must run before TensorFlow initialises its devices (before any op runs).

    Raises:
      ValueError: If TensorFlow is already initialised or `num_devices` < 1.
    """
    if num_devices < 1:
        raise ValueError(f"num_cpu_devices={num_devices} must be >= 1")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as e:
        raise ValueError(f"cannot split the CPU into {num_devices} devices now: {e}") from None


def parse_tf_config(text: str | None = None) -> dict:
    """Reads and checks TF_CONFIG for multi-worker training.

    Args:
      text: The JSON; defaults to the TF_CONFIG environment variable.

    Returns:
      The parsed TF_CONFIG.

    Raises:
      ValueError: TF_CONFIG is unset, not JSON, or lacks a cluster with workers and a task.
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise ValueError(f"--strategy=multi_worker needs TF_CONFIG, e.g. {example}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {example}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError(f"TF_CONFIG has no cluster.worker list; expected e.g. {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no task {{type, index}}; expected e.g. {example}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(
            f"TF_CONFIG task {task} is not in its cluster {cluster}; check task.type/task.index"
        )
    return config


def make_strategy(name: str, tpu_address: str = "") -> tf.distribute.Strategy:
    """Returns the strategy `name` asks for.

    auto: MirroredStrategy over the GPUs when there are several, else one device (the GPU
    if there is one, else the CPU). mirrored: all GPUs, or all logical CPUs without GPUs.
    multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG. tpu: TPUStrategy.

    Raises:
      ValueError: Unknown name, bad TF_CONFIG, or no TPU found.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name}: expected one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        device = "/gpu:0" if gpus else "/cpu:0"
        strategy = tf.distribute.OneDeviceStrategy(device)
    elif name == "mirrored":
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
        else:
            # Without GPUs MirroredStrategy() would use CPU:0 only; use every logical CPU.
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(devices=cpus)
    elif name == "multi_worker":
        parse_tf_config()
        # keras 3.15.1 cannot fit() under this strategy with several workers without these.
        keras_compat.apply()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise ValueError(
                f"--strategy=tpu: no TPU found ({e}); run on a TPU VM, pass --tpu=<address>, "
                "or use --strategy=auto"
            ) from None
        strategy = tf.distribute.TPUStrategy(resolver)
    logging.info(
        "strategy %s with %d replica(s)", strategy_name(strategy), strategy.num_replicas_in_sync
    )
    return strategy


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public class name (MultiWorkerMirroredStrategy's instances are of a private one)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def check_batch_size(global_batch_size: int, num_replicas: int) -> int:
    """Returns the per-replica batch size.

    Raises:
      ValueError: The global batch does not split evenly across the replicas.
    """
    if global_batch_size < 1 or global_batch_size % num_replicas:
        raise ValueError(
            f"batch_size {global_batch_size} is not divisible by {num_replicas} replicas; "
            f"use a multiple of {num_replicas} (--batch_size is the global batch)"
        )
    return global_batch_size // num_replicas


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs (always, except non-chief multi-workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    # Without an explicit chief, worker 0 is the chief (the TF convention).
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_label(strategy: tf.distribute.Strategy) -> str:
    """ "chief" or e.g. "worker_1", for per-worker temporary directories and logs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if is_chief(strategy) or resolver is None:
        return "chief"
    return f"{resolver.task_type}_{resolver.task_id}"
