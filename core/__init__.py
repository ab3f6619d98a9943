"""core: what every command shares, below records <- pipeline <- trainer.

``core.settings`` (a settings dataclass -> absl flags -> a console script),
``core.progress`` (the progress bar), ``core.files`` (atomic writes, file hashes) and
``core.lock`` (one run at a time per output folder). It imports none of the project's
other packages, and no TensorFlow.
"""

from core import tensorflow_logs as _tensorflow_logs

# Scripts that import only core (scripts/*.py) get quiet TensorFlow start-up too.
_tensorflow_logs.install()
