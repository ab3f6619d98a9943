"""Tests for core/lock.py and the commands that hold it: one run at a time per output folder.

The two-process tests never sleep: a first run is blocked on something the test controls
(a FIFO the real command reads, or a runner's stdin), and the test waits on that event,
never on the clock. A timeout only bounds a hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_command, subprocess_env
from core import lock

# Only bounds a hang; nothing waits for it to pass.
HANG_S = 240


def _lock(directory, **kwargs) -> lock.DirectoryLock:
    return lock.DirectoryLock(str(directory), command="train", flag="--model_dir", **kwargs)


def test_holder_writes_pid_and_command_and_removes_the_file_on_release(tmp_path):
    with _lock(tmp_path) as held:
        assert held.path == str(tmp_path / lock.LOCK_NAME)
        assert (tmp_path / lock.LOCK_NAME).read_text() == f"{os.getpid()}\ntrain\n"
    assert not (tmp_path / lock.LOCK_NAME).exists()


def test_a_second_holder_is_told_who_holds_it(tmp_path):
    # flock locks belong to an open file, so this process can stand in for another run.
    with _lock(tmp_path):
        with pytest.raises(lock.Held) as error:
            with lock.DirectoryLock(str(tmp_path), command="audit_labels", flag="--output_dir"):
                pass
    assert error.value.pid == os.getpid() and error.value.command == "train"
    assert str(error.value) == (
        f"--output_dir {tmp_path} is in use by another train run (pid {os.getpid()}); "
        "wait for it to finish or use another --output_dir"
    )
    assert isinstance(error.value, ValueError)  # a user error for every command
    with _lock(tmp_path):  # released: free again
        pass


def test_a_stale_lock_file_does_not_block(tmp_path):
    (tmp_path / lock.LOCK_NAME).write_text("999999\ntrain\n")
    with _lock(tmp_path):
        assert (tmp_path / lock.LOCK_NAME).read_text() == f"{os.getpid()}\ntrain\n"
    assert not (tmp_path / lock.LOCK_NAME).exists()


def test_a_folder_it_made_and_nothing_was_written_to_is_removed(tmp_path):
    empty = tmp_path / "a" / "b"
    with _lock(empty):
        assert empty.is_dir()
    assert not (tmp_path / "a").exists()
    used = tmp_path / "used"
    with _lock(used):
        (used / "model.keras").write_bytes(b"x")
    assert sorted(os.listdir(used)) == ["model.keras"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with _lock(existing):
        pass
    assert existing.is_dir()  # not made by the lock: kept even when empty


def test_a_file_in_the_way_is_an_error(tmp_path):
    (tmp_path / "model").write_text("x")
    with pytest.raises(
        lock.LockError, match=r"--model_dir '.*model' exists and is not a directory"
    ):
        with _lock(tmp_path / "model"):
            pass


def test_beside_locks_next_to_a_folder_that_is_replaced_whole(tmp_path):
    output = tmp_path / "export"
    with _lock(output, beside=True) as held:
        assert held.path == str(tmp_path / ".export.lock")
        assert not output.exists()  # the command creates (renames) it
        with pytest.raises(lock.Held):
            with _lock(output, beside=True):
                pass
        with _lock(tmp_path / "export2", beside=True):  # a sibling export is free
            pass
    assert sorted(os.listdir(tmp_path)) == []


def test_each_lock_name_is_its_own_lock(tmp_path):
    with _lock(tmp_path, name=".lock.worker_0"), _lock(tmp_path, name=".lock.worker_1"):
        with pytest.raises(lock.Held):
            with _lock(tmp_path, name=".lock.worker_1"):
                pass


# A first run that takes the lock exactly as the command does (the command's own lock
# function, on a config built from the same flags), says so on stdout and then waits on
# its stdin, which the test holds: it stays blocked, holding the lock, until killed.
RUNNER = """
import sys
from trainer import {module}
config = {module}.{config}(**dict(arg.lstrip("-").split("=", 1) for arg in sys.argv[1:]))
with {module}.{lock}(config):
    print("locked", flush=True)
    sys.stdin.read()
"""

COMMANDS = {
    # command: (module, config class, lock function, flags, the folder flag, the lock file
    # relative to tmp_path, the error a rerun meets once past the lock)
    "train": (
        "train",
        "TrainConfig",
        "model_dir_lock",
        ["--records_dir={tmp}/no_records", "--model_dir={tmp}/out"],
        "--model_dir",
        "out/.lock",
        "train: error: no manifest.json in ",
    ),
    "audit_data": (
        "audit_data",
        "AuditConfig",
        "output_dir_lock",
        ["--records_dir={tmp}/no_records", "--output_dir={tmp}/out"],
        "--output_dir",
        "out/.lock",
        "audit_data: error: no manifest.json in ",
    ),
    "export_model": (
        "export_model",
        "ExportConfig",
        "output_dir_lock",
        ["--model={tmp}/no_model.keras", "--output_dir={tmp}/out"],
        "--output_dir",
        ".out.lock",  # beside the folder, which the export replaces whole
        "export_model: error: --model=",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_second_run_stops_at_once_and_a_killed_runs_lock_never_blocks(tmp_path, command):
    module, config, lock_function, flags, folder_flag, lock_file, next_error = COMMANDS[command]
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    output = tmp_path / "out"
    runner = RUNNER.format(module=module, config=config, lock=lock_function)
    first = subprocess.Popen(
        [sys.executable, "-c", runner, *flags],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout.readline() == "locked\n"  # the event: it holds the lock
        assert (tmp_path / lock_file).read_text() == f"{first.pid}\n{command}\n"

        # The second run in this process: the lock is held by another process (flock
        # locks are per open file, so this process's own would block it too).
        second = run_command(f"trainer.{module}", *flags)
        assert second.returncode == 2, second.stderr[-3000:]
        message = (
            f"{command}: error: {folder_flag} {output} is in use by another {command} run "
            f"(pid {first.pid}); wait for it to finish or use another {folder_flag}"
        )
        assert second.stderr.strip().splitlines()[-1] == message, second.stderr[-3000:]
        assert second.stderr.count(f"{command}: error:") == 1
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=HANG_S)
    assert first.returncode == -signal.SIGKILL
    # The killed run's lock file is still there, with its pid; the kernel released the lock.
    assert (tmp_path / lock_file).read_text() == f"{first.pid}\n{command}\n"

    # The rerun acquires: it gets past the lock to the next thing it checks (the records,
    # the model), and removes the lock file when it ends, as only a holder does.
    rerun = run_command(f"trainer.{module}", *flags)
    assert rerun.returncode == 2, rerun.stderr[-3000:]
    assert "in use" not in rerun.stderr
    assert next_error in rerun.stderr.strip().splitlines()[-1], rerun.stderr[-3000:]
    assert not (tmp_path / lock_file).exists()
    # Nothing else left: the folder the killed run made to hold its lock, now empty
    # (train, audit_data), or nothing at all (export_model locks beside it).
    assert sorted(os.listdir(tmp_path)) == ([] if command == "export_model" else ["out"])
    assert not output.exists() or os.listdir(output) == []
