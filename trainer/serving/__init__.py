"""trainer.serving: a trained model -> exported models (the `export_model` command's
library): the serving SavedModel, the TFLite models and their client. Never imports
trainer.training."""

# Training images the int8 model is calibrated on: export_model's default and predict
# --engine=litert_int8's, so predict converts the model export_model writes. Here, not in
# tflite.py, so that export_model's flags are defined without importing TensorFlow.
CALIBRATION_IMAGES = 200
