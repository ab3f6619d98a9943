"""Shared test fixtures and helpers: tiny images made in tmp_path, hand-built records, and the
helpers several test modules use (imported everywhere as ``from conftest import ...``; pytest
puts tests/ on sys.path, and one name means one module object).

Unit tests never read the real data set; the few integration tests that do use
``sample_dir`` and are skipped (with the reason) when ``../shared`` is absent.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import logging as std_logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from absl import logging as absl_logging
from tensorflow.python.framework import config as tf_framework_config

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


# The same tiny run on train's command line (the flags tests give ``train`` itself).
TINY_TRAIN_FLAGS = (
    "--weights=none",
    "--image_size=32",
    "--dense_units=8",
    "--batch_size=8",
    "--augment=none",
    "--notensorboard",
    "--seed=5",
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


def run_process(
    command: list[str], env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """``command`` in a process of its own, from the repo root, its output captured as text.

    ``env`` defaults to ``subprocess_env()``. The timeout (300 s unless given) is for a hang,
    not a slow run: ``subprocess.run`` kills the child when it expires.
    """
    kwargs.setdefault("timeout", 300)
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=subprocess_env() if env is None else env,
        capture_output=True,
        text=True,
        **kwargs,
    )


def run_make_records(*args: str) -> subprocess.CompletedProcess:
    """``make_records`` with ``args`` in its own process."""
    return run_process([sys.executable, "-m", "records.make_records", *args])


def run_make_records_killed_after(num_shards: int, *args: str) -> subprocess.CompletedProcess:
    """``make_records`` with ``args``, SIGKILLed with its workers after ``num_shards`` shards
    (``KILLED_AFTER_SHARDS``)."""
    return run_process(
        [sys.executable, "-c", KILLED_AFTER_SHARDS, str(num_shards), *args],
        start_new_session=True,  # Its own process group: the kill takes no one else.
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1, reserved for the child processes
    that will serve on them (a tf.data service dispatcher or worker, a multi-worker task).

    A port read from a socket bound to port 0 and closed is free for anyone: another
    process binding port 0 may get it before the child binds it. Holding the socket open
    with SO_REUSEPORT until the child has bound would not do: TensorFlow's multi-worker
    gRPC server turns SO_REUSEPORT off (``NoReusePortOption`` in
    tensorflow/core/distributed_runtime/rpc/grpc_server_lib.cc), so its bind would fail.
    Instead each port is left in TIME_WAIT (an SO_REUSEADDR listener accepts a connection
    to itself and closes its end first): for a minute the kernel refuses the port to any
    bind without SO_REUSEADDR, to port 0 (the usual way to ask for a free port) or to it
    by number, while a server that sets SO_REUSEADDR binds it at once, as gRPC servers do
    (the tf.data service's and TensorFlow's multi-worker server; test_service checks the
    former). So start the children within that minute.
    """
    ports: list[int] = []
    while len(ports) < count:
        with contextlib.closing(socket.socket()) as listener:
            # The TIME_WAIT socket inherits SO_REUSEADDR from the listener; without it a
            # server's SO_REUSEADDR bind would be refused too.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            address = listener.getsockname()
            with contextlib.closing(socket.socket()) as client:
                client.connect(address)
                accepted, _ = listener.accept()
                # Closed first, the accepted end (local port: the chosen one) is the one
                # left in TIME_WAIT.
                accepted.close()
        if address[1] not in ports:
            ports.append(address[1])
    return ports


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running the project's commands in a child process (`python -m ...`)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT), **extra}


@dataclasses.dataclass
class CommandResult:
    """What a command run in this process returned and wrote (``run_command``)."""

    returncode: int
    stdout: str
    stderr: str  # What it printed there, its absl log lines and tqdm's bars; not C++ lines.


def _console_scripts() -> dict[str, str]:
    """Entry module -> console script name, from setup.cfg (one definition of the names)."""
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    scripts = {}
    for line in parser["options.entry_points"]["console_scripts"].splitlines():
        if "=" in line and not line.strip().startswith("#"):
            name, target = (part.strip() for part in line.split("=", 1))
            scripts.setdefault(target.split(":")[0], name)
    return scripts


CONSOLE_SCRIPTS = _console_scripts()

# absl's own flags (logging, --help, --flagfile): kept across commands; every command's
# flags are defined by its run() and deleted after it, so that each command run in this
# process gets its own flags, defaults and help, as in a process of its own.
app.define_help_flags()
_ABSL_FLAGS = frozenset(flags.FLAGS)


def run_command(module_name: str, *args: str) -> CommandResult:
    """Runs a console script's ``run()`` in this process, as ``<script> args...`` would.

    The Flax examples' way (``train_test.py`` calls ``train_and_evaluate``): the command's
    own flag parsing, checks, user-error handling and exit status, without paying for a
    new Python and TensorFlow (4+ s each). A subprocess is still the tool for what needs
    one: SIGKILL, locks held by another process, several workers, C++ log lines.

    Args:
      module_name: The entry module, e.g. ``"trainer.train"``.
      *args: The command line after the script's name.

    Returns:
      The exit status (0, 1 or 2 as the command ends; a traceback fails the test itself),
      and the text written to stdout and stderr (absl log lines included).
    """
    module = importlib.import_module(module_name)
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    saved_argv, saved_stream = sys.argv, handler.stream
    saved_level = std_logging.root.level
    deterministic = tf_framework_config.is_op_determinism_enabled()
    sys.argv = [CONSOLE_SCRIPTS.get(module_name, module_name.rsplit(".", 1)[-1]), *args]
    handler.stream = stderr
    # What absl's first app.run in a process sets (INFO; --verbosity changes it when
    # parsed); unparse_flags below sets absl's default, WARNING, and a later app.run in
    # the same process would keep that.
    std_logging.root.setLevel(std_logging.INFO)
    returncode = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            module.run()
    except SystemExit as e:
        if isinstance(e.code, str):
            stderr.write(e.code + "\n")
        returncode = 1 if isinstance(e.code, str) else (e.code or 0)
    finally:
        sys.argv, handler.stream = saved_argv, saved_stream
        for name in set(flags.FLAGS) - _ABSL_FLAGS:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
        std_logging.root.setLevel(saved_level)
        # What a command sets for its process and a test process would keep: the dtype
        # policy and op determinism (which refuses tf.random's global generator after it).
        keras.mixed_precision.set_global_policy("float32")
        if tf_framework_config.is_op_determinism_enabled() and not deterministic:
            tf_framework_config.disable_op_determinism()  # No public API to turn it off.
        keras.backend.clear_session()
    return CommandResult(returncode, stdout.getvalue(), stderr.getvalue())


def train_args(records_dir, model_dir, *flags: str) -> list[str]:
    """``train``'s command line: the two required flags, then ``flags``.

    ``--recipe=none`` first: the tests' flags start from ``TrainConfig``'s plain defaults,
    as tests/train_runner.py's do, not from the default recipe's (a later --recipe wins).
    """
    return ["--recipe=none", f"--records_dir={records_dir}", f"--model_dir={model_dir}", *flags]


def run_train(records_dir, model_dir, *flags: str) -> CommandResult:
    """``train`` with ``train_args`` in this process (``run_command``)."""
    return run_command("trainer.train", *train_args(records_dir, model_dir, *flags))


def train_command(records_dir, model_dir, *flags: str) -> list[str]:
    """`python -m trainer.train` with ``train_args``: for a process of its own."""
    return [sys.executable, "-m", "trainer.train", *train_args(records_dir, model_dir, *flags)]


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


def make_damaged_jpeg(seed: int = 7) -> bytes:
    """A 64x64 JPEG whose Huffman table has impossible code counts: every marker and length
    is intact, so the header checks pass and only the decoder refuses it."""
    damaged = bytearray(make_jpeg_bytes(64, 64, seed=seed))
    table = damaged.index(b"\xff\xc4")
    damaged[table + 5 : table + 21] = bytes([200] * 16)
    return bytes(damaged)


def png_claiming(side: int) -> bytes:
    """A 1x1 PNG whose header claims ``side`` x ``side`` pixels (CRC fixed): a decompression
    bomb as the header check sees it."""
    data = bytearray(tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)).numpy())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = side.to_bytes(4, "big") * 2
    data[ihdr + 17 : ihdr + 21] = zlib.crc32(bytes(data[ihdr : ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


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
    """A ``side`` x ``side`` RGB JPEG, smooth colours at quality 5: ~1 MB on disk for 144 MP.

    Made once per test module and read from disk. Built in uint8 (~430 MB at 12000; a
    float32 copy would be 1.7 GB): four corner colours blended bilinearly over a grid of
    1/32 the side, then each cell repeated up to the full size (a nearest resize keeps uint8).
    """
    corners = tf.constant([[[200, 40, 40], [40, 40, 200]], [[40, 200, 40], [220, 220, 220]]])
    cells = -(-side // 32)
    grid = tf.image.resize(tf.cast(corners, tf.float32)[None], (cells, cells))[0]
    grid = tf.cast(tf.round(grid), tf.uint8)
    picture = tf.image.resize(grid[None], (side, side), method="nearest")[0]
    data = tf.io.encode_jpeg(picture, quality=5).numpy()
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


# The files that take longest (real photos converted and trained on, a run SIGKILLed at
# every point, service and multi-worker processes; docs/testing.md), longest first. pytest-
# xdist hands out whole files in collection order, so these start first and the workers
# end together instead of one finishing a long file alone.
LONGEST_FIRST = (
    "test_learning.py",
    "test_analysis.py",
    "test_multiworker.py",
    "test_service.py",
    "test_serving_parity.py",
    "test_resume.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: file order kept.


# Quieter test output: hide TensorFlow's C++ INFO and WARNING lines (errors still show).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def litert_images(monkeypatch) -> list[int]:
    """Counts the images every ``LiteRTRunner`` runs during the test (one entry per
    call): proof that a pass used LiteRT, whose answers equal Keras' within round-off."""
    from trainer.models import engine

    calls: list[int] = []
    run = engine.LiteRTRunner.predict_on_batch

    def counting(self, images):
        calls.append(len(images))
        return run(self, images)

    monkeypatch.setattr(engine.LiteRTRunner, "predict_on_batch", counting)
    return calls
