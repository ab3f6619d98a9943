r"""``train`` with a test-only callback: what tests run in a subprocess to stop a real
training run at an exact point and to see inside it. Test code, never the library's.

  python tests/train_runner.py --kill_at=0:1:2 --records_dir=... --model_dir=...

Takes every ``train`` flag, plus ``--kill_at``, ``--dump_dir``, ``--val_accuracy`` and
``--events_fd`` (see ``Probe``), and calls ``fit.train(config, callbacks=[Probe(...)])``:
the library's own hook for extra callbacks, which runs them after the run's callbacks
and before its backup.
"""

from __future__ import annotations

import json
import os
import signal

import keras
from absl import flags

from conftest import ScriptedValAccuracy
from core import settings
from trainer.models import model as model_lib
from trainer.training import fit
from trainer.training import strategy as strategy_lib
from trainer.training.config import TrainConfig

flags.DEFINE_string(
    "kill_at",
    None,
    "PHASE:EPOCH:BATCH: SIGKILL this process after that training batch (0-based; EPOCH "
    "counts across phases), before a backup at that batch; BATCH=end: at that epoch's "
    "end, after its history row, before its backup.",
)
flags.DEFINE_string(
    "dump_dir",
    None,
    "Write into this folder: at each fit's first epoch begin, before any step, the "
    "weights and optimizer state as the restore left them (phase<P>.weights.h5, "
    "phase<P>.json: epoch, optimizer iterations); at each epoch end the weights "
    "(epoch<E>.weights.h5); each training batch's logs as callbacks get them "
    "(batch_logs.jsonl).",
)
flags.DEFINE_list(
    "val_accuracy",
    None,
    "Scripted val_accuracy, one value per epoch (across phases): replaces the measured "
    "one before any callback sees the epoch's logs, so early stopping and the best "
    "checkpoint follow the script, not the training trajectory.",
)
flags.DEFINE_integer(
    "events_fd",
    None,
    "An inherited pipe's write end: one line 'batch EPOCH BATCH' per training batch end.",
)
FLAGS = flags.FLAGS


class Probe(ScriptedValAccuracy, keras.callbacks.Callback):
    """The callback behind this runner's flags."""

    def __init__(
        self,
        phase_two_start: int,
        kill_at: str | None = None,
        dump_dir: str | None = None,
        val_accuracy: list[float] | None = None,
        events_fd: int | None = None,
    ):
        super().__init__()
        self.phase_two_start = phase_two_start
        self.kill_at = kill_at
        self.dump_dir = dump_dir
        self.script_val_accuracy(val_accuracy)
        self.events = os.fdopen(events_fd, "w", buffering=1) if events_fd is not None else None
        self.epoch = None
        self.dumped = False
        if dump_dir:
            os.makedirs(dump_dir, exist_ok=True)

    def _phase(self, epoch: int) -> int:
        return 0 if epoch < self.phase_two_start else 1

    def _maybe_kill(self, epoch: int, point) -> None:
        if self.kill_at == f"{self._phase(epoch)}:{epoch}:{point}":
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_begin(self, logs=None):
        self.dumped = False  # Once per fit, i.e. per phase.
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.dump_dir and not self.dumped:
            self.dumped = True
            prefix = os.path.join(self.dump_dir, f"phase{self._phase(epoch)}")
            self.model.save_weights(f"{prefix}.weights.h5")
            state = {"epoch": epoch, "iterations": int(self.model.optimizer.iterations.numpy())}
            with open(f"{prefix}.json", "w") as f:
                json.dump(state, f)

    def on_train_batch_end(self, batch, logs=None):
        if self.dump_dir:
            values = {key: float(value) for key, value in (logs or {}).items()}
            line = {"epoch": self.epoch, "batch": batch, **values}
            with open(os.path.join(self.dump_dir, "batch_logs.jsonl"), "a") as f:
                f.write(json.dumps(line) + "\n")
        if self.events is not None:
            self.events.write(f"batch {self.epoch} {batch}\n")
        self._maybe_kill(self.epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.dump_dir:
            self.model.save_weights(os.path.join(self.dump_dir, f"epoch{epoch}.weights.h5"))
        self._maybe_kill(epoch, "end")


def main(config: TrainConfig) -> int:
    # As trainer.train.main does: logical CPU devices before TensorFlow initialises them.
    if config.num_cpu_devices != 1:
        strategy_lib.configure_cpu_devices(config.num_cpu_devices)
    probe = Probe(
        config.epochs,
        kill_at=FLAGS.kill_at,
        dump_dir=FLAGS.dump_dir,
        val_accuracy=[float(v) for v in FLAGS.val_accuracy] if FLAGS.val_accuracy else None,
        events_fd=FLAGS.events_fd,
    )
    fit.train(config, callbacks=[probe])
    return 0


if __name__ == "__main__":
    settings.run(
        TrainConfig, main, __name__, errors=(ValueError, FileNotFoundError, model_lib.WeightsError)
    )
