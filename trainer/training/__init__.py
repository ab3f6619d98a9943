"""trainer.training: a model and batches -> a trained model folder (the `train` and `preview`
commands' library): settings, input, strategy, precision, callbacks, resume."""
