"""Shared test fixtures and helpers: tiny images made in tmp_path, hand-built records, and the
helpers several test modules use (imported everywhere as ``from conftest import ...``; pytest
puts tests/ on sys.path, and one name means one module object).

Unit tests never read the real data set; the few integration tests that do use
``sample_dir`` and are skipped (with the reason) when ``../shared`` is absent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from records import schema, writer
from records.manifest import Manifest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT.parent / "shared" / "data" / "dogs-vs-cats" / "train"


# TrainConfig settings for a real training run on tiny records in a few seconds.
TINY_TRAIN_SETTINGS = dict(
    image_size=32,
    dense_units=8,
    weights="none",
    batch_size=8,
    learning_rate=1e-2,
    seed=3,
    tensorboard=False,
)


class ScriptedValAccuracy:
    """Mixin for a Keras callback: each epoch's val_accuracy becomes ``values[epoch]``.

    fit validates through the model's evaluate and makes its logs the epoch's val_* logs:
    changed there, every callback's on_epoch_end sees the script, whatever its place in the
    list, so early stopping and the best checkpoint follow the script, not the training
    trajectory. Used in-process (test_fit) and by tests/train_runner.py's Probe.
    """

    def script_val_accuracy(self, values: list[float] | None) -> None:
        self.val_accuracy, self.epoch = values, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_begin(self, logs=None):
        if self.val_accuracy is None:
            return
        evaluate = self.model.evaluate

        def scripted_evaluate(*args, **kwargs):
            logs = evaluate(*args, **kwargs)
            logs["accuracy"] = self.val_accuracy[self.epoch]
            return logs

        self.model.evaluate = scripted_evaluate

    def on_train_end(self, logs=None):
        self.model.__dict__.pop("evaluate", None)


# `make_records` with a test-only hook: `python -c KILLED_AFTER_SHARDS N --flags...` SIGKILLs
# its whole process group (itself and its pool workers, like a real kill) right after the
# Nth shard is renamed to its final name, so the kill lands at the same point on any
# machine, however fast.
KILLED_AFTER_SHARDS = """
import os, signal, sys
from records import make_records, writer
kill_after, written = int(sys.argv.pop(1)), 0
write_shard = writer._write_shard

def write_shard_then_maybe_die(*args, **kwargs):
    global written
    sidecar = write_shard(*args, **kwargs)
    written += 1
    if written == kill_after:
        os.killpg(0, signal.SIGKILL)
    return sidecar

writer._write_shard = write_shard_then_maybe_die
make_records.run()
"""


def run_make_records(*args: str) -> subprocess.CompletedProcess:
    """``make_records`` with ``args`` in its own process (output captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "records.make_records", *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_make_records_killed_after(num_shards: int, *args: str) -> subprocess.CompletedProcess:
    """``make_records`` with ``args``, SIGKILLed with its workers after ``num_shards`` shards
    (``KILLED_AFTER_SHARDS``)."""
    return subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_SHARDS, str(num_shards), *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,  # Its own process group: the kill takes no one else.
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running the project's commands in a child process (`python -m ...`)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT), **extra}


def train_command(records_dir, model_dir, *flags: str) -> list[str]:
    """`python -m trainer.train` with the two required flags, then ``flags``.

    ``--recipe=none`` first: the tests' flags start from ``TrainConfig``'s plain defaults,
    as tests/train_runner.py's do, not from the default recipe's (a later --recipe wins).
    """
    return [
        sys.executable,
        "-m",
        "trainer.train",
        "--recipe=none",
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        *flags,
    ]


def train_runner_command(records_dir, model_dir, *flags: str) -> list[str]:
    """``train_command`` through tests/train_runner.py: ``train`` with a test-only callback
    (``--kill_at``, ``--dump_dir``, ``--val_accuracy``, ``--events_fd``)."""
    return [
        sys.executable,
        str(REPO_ROOT / "tests" / "train_runner.py"),
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        *flags,
    ]


class OutputWatcher:
    """Reads a child process's text output line by line in a thread, copying it to a log
    file, so that a test can wait for a line to appear: an event, no sleeping or polling.
    """

    # Only for a child that hangs: the waits end at the line or at the output's end.
    HANG_GUARD_S = 600

    def __init__(self, stream, log_path: pathlib.Path):
        self.log_path = log_path
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        with open(self.log_path, "w") as log:
            for line in stream:
                log.write(line)
                log.flush()
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, text: str) -> str:
        """Blocks until a line containing ``text`` has been read; returns that line.

        Raises:
          AssertionError: The output ended (the child exited) without such a line.
        """
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._ended or any(text in line for line in self._lines),
                timeout=self.HANG_GUARD_S,
            )
            lines = list(self._lines)
        match = next((line for line in lines if text in line), None)
        tail = "".join(lines)[-3000:]
        assert match is not None, f"{text!r} never came ({'ended' if found else 'hung'}):\n{tail}"
        return match

    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def close(self) -> None:
        """Waits for the output's end (after the child exited)."""
        self._thread.join(timeout=self.HANG_GUARD_S)


def make_jpeg_bytes(height: int = 48, width: int = 64, seed: int = 0, quality: int = 90) -> bytes:
    """A small RGB JPEG with random content (distinct seeds give distinct bytes)."""
    rng = np.random.default_rng(seed)
    # Smooth-ish content compresses like a photo; pure noise would bloat the JPEG.
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = tf.image.resize(base[None], (height, width), method="bilinear")[0]
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def write_kaggle_folder(
    folder: pathlib.Path, num_per_class: int, height: int = 48, width: int = 64
) -> list[pathlib.Path]:
    """Writes ``cat.N.jpg`` / ``dog.N.jpg`` like the Kaggle train folder; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, name in enumerate(schema.CLASS_NAMES):
        for i in range(num_per_class):
            path = folder / f"{name}.{i}.jpg"
            path.write_bytes(make_jpeg_bytes(height, width, seed=1000 * label + i))
            paths.append(path)
    return paths


def make_big_jpeg(path, side: int = 12000) -> bytes:
    """A ``side`` x ``side`` RGB JPEG, smooth colours at quality 5: ~2 MB on disk for 144 MP.

    Made once per test module (~2 s, ~600 MB peak while encoding) and read from disk.
    """
    corners = np.array([[[200, 40, 40], [40, 40, 200]], [[40, 200, 40], [220, 220, 220]]])
    picture = Image.fromarray(corners.astype(np.uint8)).resize((side, side), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=5)
    data = buffer.getvalue()
    del picture
    path.write_bytes(data)
    return data


def convert(inputs, output_dir, **kwargs) -> writer.ConversionResult:
    """``records.writer.convert`` of ``inputs`` (paths) into ``output_dir``, progress off."""
    kwargs.setdefault("progress", False)
    return writer.convert(
        writer.ConvertOptions(
            inputs=tuple(str(i) for i in inputs), output_dir=str(output_dir), **kwargs
        )
    )


def placed_splits(the_plan) -> dict[str, str]:
    """Source name -> split, for every image a ``records.plan.Plan`` writes."""
    return {
        source.name: split
        for split, shards in the_plan.shards.items()
        for shard in shards
        for source, _ in shard
    }


def read_records(records_dir) -> dict[str, list[dict]]:
    """split -> records (in shard order) as plain dicts, through schema.parse_example."""
    manifest = Manifest.load(str(records_dir))
    out = {}
    for split in schema.SPLITS:
        rows = []
        if split in manifest.splits and manifest.splits[split].shards:
            files = manifest.split(split).paths
            for parsed in tf.data.TFRecordDataset(files).map(schema.parse_example):
                rows.append({key: value.numpy() for key, value in parsed.items()})
        out[split] = rows
    return out


def write_records(
    records_dir: pathlib.Path,
    examples: dict[str, list[tuple[bytes, int, str]]],
    num_shards: int = 2,
) -> dict:
    """Writes shards + manifest straight through ``records.schema`` (no converter).

    For pipeline and trainer tests that need exact control of what the records hold.
    ``examples`` maps split -> [(jpeg_bytes, label, filename)]; examples are dealt
    round-robin into ``num_shards`` shards per split.
    """
    records_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": schema.FORMAT_VERSION,
        "class_names": list(schema.CLASS_NAMES),
        "settings": {"writer": "tests.conftest.write_records"},
        "inputs_found": sum(len(v) for v in examples.values()),
        "splits": {},
        "skipped": [],
        "duplicates": [],
    }
    for split, items in examples.items():
        shards = []
        for index in range(num_shards):
            name = schema.shard_name(split, index, num_shards)
            path = records_dir / name
            chunk = items[index::num_shards]
            with tf.io.TFRecordWriter(str(path)) as writer:
                for encoded, label, filename in chunk:
                    height, width, _ = tf.io.decode_jpeg(encoded).shape
                    example = schema.make_example(
                        encoded=encoded,
                        label=label,
                        filename=filename,
                        height=height,
                        width=width,
                        sha256=hashlib.sha256(encoded).hexdigest(),
                    )
                    writer.write(example.SerializeToString())
            shards.append(
                {
                    "file": name,
                    "num_examples": len(chunk),
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            )
        counts = {
            c: sum(1 for _, label, _ in items if label == i)
            for i, c in enumerate(schema.CLASS_NAMES)
        }
        manifest["splits"][split] = {
            "num_examples": len(items),
            "class_counts": counts,
            "shards": shards,
        }
    (records_dir / schema.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def alternating_examples(
    count: int, offset: int, height_step: int = 8, width_step: int = 8
) -> list[tuple[bytes, int, str]]:
    """``write_records`` examples: labels alternating cat/dog, three heights, two widths."""
    return [
        (
            make_jpeg_bytes(40 + height_step * (i % 3), 56 + width_step * (i % 2), seed=offset + i),
            i % 2,
            f"{schema.CLASS_NAMES[i % 2]}.{offset + i}.jpg",
        )
        for i in range(count)
    ]


@pytest.fixture
def tiny_records(tmp_path: pathlib.Path) -> pathlib.Path:
    """A records dir: train 24 examples, val 12, two shards each, labels alternating."""
    records_dir = tmp_path / "records"
    write_records(
        records_dir,
        {"train": alternating_examples(24, 0), "val": alternating_examples(12, 500)},
    )
    return records_dir


@pytest.fixture
def saved_figures(monkeypatch) -> dict:
    """Every matplotlib figure saved during the test: output path -> the ``Figure``.

    Plotting code closes its figures after saving; a closed figure keeps its axes, artists
    and data, so a test can assert what a picture shows (panels, titles, bars, pixels in
    a cell) instead of only that a PNG was written.
    """
    import matplotlib.figure

    saved = {}
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(figure, fname, *args, **kwargs):
        saved[str(fname)] = figure
        return savefig(figure, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    return saved


def bar_chart(figure) -> list[tuple[str, float, tuple]]:
    """(label, length, RGBA colour) of each bar of a one-panel ``barh`` chart, in the
    order the names were given (bar i sits at y = i, labelled by tick i)."""
    (axes,) = figure.axes
    labels = [label.get_text() for label in axes.get_yticklabels()]
    bars = sorted(axes.patches, key=lambda bar: bar.get_y())
    return [(label, bar.get_width(), bar.get_facecolor()) for label, bar in zip(labels, bars)]


@pytest.fixture
def sample_dir() -> pathlib.Path:
    """The real Kaggle sample beside the repo; skips the test when it is not there."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


# Quieter test output: hide TensorFlow's C++ INFO and WARNING lines (errors still show).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
