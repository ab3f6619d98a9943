"""trainer.serving: a trained model -> exported models (the `export_model` command's
library): the serving SavedModel, the TFLite models and their client. Never imports
trainer.training."""
