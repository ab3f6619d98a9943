"""core: what every command shares, below records <- pipeline <- trainer.

``core.settings`` (a settings dataclass -> absl flags -> a console script),
``core.progress`` (the progress bar), ``core.files`` (atomic writes, file hashes) and
``core.lock`` (one run at a time per output folder). It imports none of the project's
other packages, and no TensorFlow.
"""
