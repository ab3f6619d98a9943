"""Real multi-device and multi-process training runs (subprocesses, bounded in time).

Logical CPU devices and TF_CONFIG must be set before TensorFlow initialises, so every
run here is a fresh `python -m trainer.train` process.
"""

from __future__ import annotations

import json
import subprocess

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import (
    REPO_ROOT,
    alternating_examples,
    free_ports,
    run_process,
    run_train,
    subprocess_env,
    train_command,
    train_runner_command,
    write_records,
)
from trainer.models import model as model_lib

# Both tests start training processes (2 minutes and 30 s).
pytestmark = pytest.mark.slow

COMMON = [
    "--weights=none",
    "--image_size=32",
    "--dense_units=8",
    "--dropout=0",
    "--augment=none",
    "--notensorboard",
    "--seed=11",
    "--deterministic",
    "--learning_rate=0.01",
]


_env = subprocess_env


def _command(records_dir, model_dir, *flags, command=train_command):
    return command(records_dir, model_dir, *COMMON, *flags)


def _dumping(dump_dir):
    """``train`` through tests/train_runner.py, which writes each batch's logs to dump_dir."""

    def command(records_dir, model_dir, *flags):
        return train_runner_command(records_dir, model_dir, f"--dump_dir={dump_dir}", *flags)

    return command


def _records(tmp_path, num_train=32, num_val=8):
    records_dir = tmp_path / "records"
    examples = {
        "train": alternating_examples(num_train, 0),
        "val": alternating_examples(num_val, 900),
    }
    write_records(records_dir, examples)
    return records_dir


def test_mirrored_two_cpus_matches_one_device(tmp_path):
    # 32 examples / global batch 16: both runs see the same two batches per epoch (one
    # device: 16 at a time; two replicas: 8 + 8 consecutive from the same seeded order).
    records_dir = _records(tmp_path)
    flags = ["--batch_size=16", "--epochs=1", "--steps_per_epoch=2"]
    runs = {
        "one": ["--strategy=one_device"],
        "mirrored": ["--strategy=mirrored", "--num_cpu_devices=2"],
    }
    models = {}
    for name, extra in runs.items():
        if name == "one":
            # One device needs no process of its own: the same train, in this process.
            result = run_train(records_dir, tmp_path / name, *COMMON, *flags, *extra)
        else:
            # Logical CPU devices must be set before TensorFlow initialises: a process.
            result = run_process(_command(records_dir, tmp_path / name, *flags, *extra), _env())
        assert result.returncode == 0, result.stderr[-3000:]
        models[name] = model_lib.load_model(str(tmp_path / name / "model.keras"))
    metrics = json.loads((tmp_path / "mirrored" / "metrics.json").read_text())
    assert metrics["strategy"] == "MirroredStrategy" and metrics["replicas"] == 2
    one, mirrored = models["one"], models["mirrored"]
    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    # The reported loss is a metric aggregated across replicas: close, not bit-equal.
    np.testing.assert_allclose(
        one_metrics["final_train_loss"], metrics["final_train_loss"], rtol=1e-2
    )
    # Compare what training changed (trained - initial): summing gradients across
    # replicas reorders float additions, so expect agreement to a small relative error.
    keras.utils.set_random_seed(11)
    initial = model_lib.build_model(
        model_lib.ModelConfig(image_size=(32, 32), weights="none", dense_units=8, dropout=0.0)
    )
    compared = 0
    for w0, w_one, w_mirrored in zip(initial.weights, one.weights, mirrored.weights):
        update_one = w_one.numpy() - w0.numpy()
        update_mirrored = w_mirrored.numpy() - w0.numpy()
        norm = np.linalg.norm(update_one)
        if norm == 0:  # Frozen layers: unchanged in both.
            assert np.linalg.norm(update_mirrored) == 0, w0.path
            continue
        compared += 1
        assert np.linalg.norm(update_one - update_mirrored) / norm < 0.02, w0.path
    assert compared == 10  # block5 (3 convs) + dense + predictions, kernel and bias each.


def test_multi_worker_two_processes_train_and_log_like_one_process(tmp_path):
    # 32 train / 16 val examples in 2 shards each, global batch 8 = 4 per worker: each
    # worker reads one shard (pipeline.shards splits the files), and with 4 steps an
    # epoch is exactly one pass over it, so both workers together see every example
    # once per epoch, as the one-process run (4 steps of 8) does. Validation: 2 full
    # batches, again every val example once. The learning rate is so small that the
    # weights do not move measurably, so an epoch's logged loss and accuracy are the
    # mean over the same examples at the same weights, whichever examples share a batch:
    # the two runs must log the same numbers (up to float summation order). The shards
    # differ (labels alternate and are dealt round-robin: one shard is all cats, the
    # other all dogs), so a worker logging only its own share would show.
    # The epoch-level logs come from Keras' metric variables; the per-batch logs that
    # callbacks get are what trainer/training/keras_compat.py reduces across workers: the last
    # batch's running values must equal the epoch's on every worker (a sum over the two
    # workers would double them).
    records_dir = _records(tmp_path, num_train=32, num_val=16)
    flags = ["--batch_size=8", "--epochs=2", "--steps_per_epoch=4", "--learning_rate=1e-7"]
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    model_dir = tmp_path / "model"
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(
                subprocess.Popen(
                    _command(
                        records_dir,
                        model_dir,
                        "--strategy=multi_worker",
                        *flags,
                        command=_dumping(tmp_path / f"batches{index}"),
                    ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=_env(TF_CONFIG=json.dumps(tf_config)),
                    cwd=REPO_ROOT,
                )
            )
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        # Never leave a worker behind, whatever happened above.
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "MultiWorkerMirroredStrategy"
    assert metrics["replicas"] == 2
    assert metrics["epochs_completed"] == 2
    assert (model_dir / "model.keras").is_file()
    # The non-chief wrote nothing that outlives the run.
    assert sorted(p.name for p in model_dir.iterdir() if "worker" in p.name) == []

    one = run_process(
        _command(
            records_dir,
            tmp_path / "one",
            "--strategy=one_device",
            *flags,
            command=_dumping(tmp_path / "batches_one"),
        ),
        _env(),
    )
    assert one.returncode == 0, one.stderr[-3000:]
    columns = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    multi_worker = pd.read_csv(model_dir / "history.csv")[columns]
    one_process = pd.read_csv(tmp_path / "one" / "history.csv")[columns]
    assert multi_worker["epoch"].tolist() == one_process["epoch"].tolist() == [0, 1]
    np.testing.assert_allclose(multi_worker.to_numpy(), one_process.to_numpy(), rtol=1e-5)
    for batches in ["batches0", "batches1", "batches_one"]:
        logs = pd.read_json(tmp_path / batches / "batch_logs.jsonl", lines=True)
        last = logs.groupby("epoch").last()
        np.testing.assert_allclose(
            last[["loss", "accuracy"]].to_numpy(),
            one_process[["loss", "accuracy"]].to_numpy(),
            rtol=1e-5,
            err_msg=batches,
        )
