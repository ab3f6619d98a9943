"""Tests for trainer/training/strategy.py (the multi-device runs are in test_multiworker.py)."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from trainer.training import strategy as strategy_lib


def test_auto_on_cpu_is_one_device():
    strategy = strategy_lib.make_strategy("auto")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1
    assert strategy_lib.is_chief(strategy)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="--strategy=gpu: expected one of"):
        strategy_lib.make_strategy("gpu")


def test_tpu_unavailable_is_a_clear_error():
    with pytest.raises(ValueError, match="--strategy=tpu: no TPU found"):
        strategy_lib.make_strategy("tpu")


def test_batch_size_must_divide_across_replicas():
    assert strategy_lib.check_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match="batch_size 30 is not divisible by 4 replicas"):
        strategy_lib.check_batch_size(30, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "needs TF_CONFIG"),
        ("{not json", "not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "no cluster.worker"),
        (json.dumps({"cluster": {"worker": ["a:1"]}}), "no task"),
        (
            json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}),
            "not in its cluster",
        ),
    ],
)
def test_bad_tf_config(text, message):
    with pytest.raises(ValueError, match=message):
        strategy_lib.parse_tf_config(text)


def test_good_tf_config():
    text = json.dumps(
        {
            "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
            "task": {"type": "worker", "index": 1},
        }
    )
    assert strategy_lib.parse_tf_config(text)["task"]["index"] == 1


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        strategy_lib.make_strategy("multi_worker")
