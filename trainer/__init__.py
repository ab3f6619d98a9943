"""trainer: batches -> a model and the model -> answers (train, evaluate, predict, preview,
export, audit). ``train`` runs a named recipe (trainer/training/recipes.py); the default,
demo, trains a head on EfficientNet-Lite0's frozen ImageNet features."""

from core import tensorflow_logs as _tensorflow_logs

# Before anything here imports TensorFlow: no C++ INFO/WARNING lines unless asked for.
_tensorflow_logs.install()
