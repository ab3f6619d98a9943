"""trainer: batches -> a model (train, evaluate, predict, preview): VGG16 fine-tuning by default."""

import os as _os

# Hide TensorFlow's C++ INFO lines (e.g. the CPU-feature notice) in our commands; warnings
# and errors still show, and a value the user set wins. Must precede TF's import. (The
# CUDA-probe lines print before TF reads this setting and still appear.)
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
