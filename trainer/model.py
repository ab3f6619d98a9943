"""The classifier: a Keras VGG16 base, partly frozen, with a small dense head.

The model takes raw RGB pixels (uint8 or float in 0..255): VGG16's own preprocessing
is a layer inside it, so the saved model needs no preprocessing code to predict.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import keras
from absl import logging

# The standard Keras file (the one `keras.applications.VGG16` downloads and caches).
NOTOP_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
NOTOP_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + NOTOP_WEIGHTS_FILE
)
NOTOP_WEIGHTS_MD5 = "6d6bbae143d832006294945121d1f1fc"

# VGG16 layers[:15] are the input and blocks 1-4 (the classic "freeze through block4").
DEFAULT_FREEZE_LAYERS = 15
HEADS = ("softmax", "sigmoid")
POOLINGS = ("flatten", "avg")
# Give up on the ImageNet download quickly where there is no network, instead of hanging.
_DOWNLOAD_TIMEOUT_S = 30


class WeightsError(RuntimeError):
    """The requested base weights could not be found, downloaded or loaded."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What `build_model` builds.

    Attributes:
      image_size: (height, width) of the input images.
      weights: "imagenet", "none", or the path of a VGG16 notop weights file (.h5).
      freeze_layers: How many of the base's layers (counting its input layer) to freeze.
      dense_units: Width of the hidden dense layer of the head.
      dropout: Dropout rate after the hidden dense layer.
      head: "softmax" (2 units, the default) or "sigmoid" (1 unit, P(dog)).
      pooling: "flatten" (the classic head) or "avg" (global average pooling).
    """

    image_size: tuple[int, int] = (128, 128)
    weights: str = "imagenet"
    freeze_layers: int = DEFAULT_FREEZE_LAYERS
    dense_units: int = 256
    dropout: float = 0.5
    head: str = "softmax"
    pooling: str = "flatten"


@keras.saving.register_keras_serializable(package="trainer")
class VGG16Preprocess(keras.layers.Layer):
    """`keras.applications.vgg16.preprocess_input` as a layer: RGB 0..255 -> BGR, mean-centred.

    A layer (not a Lambda) so the saved `.keras` model reloads without unsafe deserialisation.
    """

    # ImageNet channel means in BGR order, as in keras.applications.imagenet_utils ("caffe").
    _MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        images = keras.ops.cast(inputs, self.compute_dtype)
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self._MEAN_BGR, dtype=self.compute_dtype)


def resolve_weights(weights: str) -> str | None:
    """Returns the weights file to load into the base, or None for random weights.

    Args:
      weights: "imagenet" (Keras download, cached in $KERAS_HOME/models), "none", or a path.

    Raises:
      WeightsError: The ImageNet file cannot be downloaded, or the path does not exist.
    """
    if weights.lower() == "none":
        return None
    if weights == "imagenet":
        # Where Keras itself caches it: $KERAS_HOME (default ~/.keras) / models.
        keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        cache = os.path.join(keras_home, "models")
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        try:
            return keras.utils.get_file(
                NOTOP_WEIGHTS_FILE,
                NOTOP_WEIGHTS_URL,
                cache_dir=keras_home,
                cache_subdir="models",
                file_hash=NOTOP_WEIGHTS_MD5,
            )
        # get_file wraps network failures in a plain Exception; anything here means no file.
        except Exception as e:  # noqa: BLE001
            raise WeightsError(
                f"could not download the VGG16 ImageNet weights ({e}). Either download "
                f"{NOTOP_WEIGHTS_URL} on a machine with internet and put "
                f"{NOTOP_WEIGHTS_FILE} in {cache} (the Keras cache: $KERAS_HOME/models, "
                f"default ~/.keras/models), or pass --weights=/path/to/{NOTOP_WEIGHTS_FILE}, "
                "or train from scratch with --weights=none --freeze_layers=0"
            ) from None
        finally:
            socket.setdefaulttimeout(previous_timeout)
    if not os.path.isfile(weights):
        raise WeightsError(
            f"--weights={weights}: no such file; pass imagenet, none, or the path of "
            f"{NOTOP_WEIGHTS_FILE}"
        )
    if not weights.endswith((".h5", ".hdf5")):
        raise WeightsError(
            f"--weights={weights}: expected a legacy Keras .h5 weights file like "
            f"{NOTOP_WEIGHTS_FILE}"
        )
    return weights


def build_base(config: ModelConfig) -> keras.Model:
    """VGG16 without its top, with `config.weights` loaded and the first layers frozen.

    Raises:
      WeightsError: The weights cannot be obtained or do not fit VGG16.
      ValueError: `freeze_layers` is out of range.
    """
    weights_path = resolve_weights(config.weights)
    base = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(*config.image_size, 3)
    )
    if weights_path is not None:
        try:
            base.load_weights(weights_path)
        except (ValueError, OSError, KeyError) as e:
            raise WeightsError(
                f"{weights_path} does not hold VGG16 notop weights in the standard "
                f"{NOTOP_WEIGHTS_FILE} layout: {e}"
            ) from None
        logging.info("loaded VGG16 base weights from %s", weights_path)
    else:
        logging.warning(
            "--weights=none: the VGG16 base starts from random weights, so freezing its first "
            "%d layers makes little sense; train all layers with --freeze_layers=0",
            config.freeze_layers,
        )
    _freeze(base, config.freeze_layers)
    return base


def _freeze(base: keras.Model, freeze_layers: int) -> None:
    """Freezes the first ``freeze_layers`` layers of ``base``; the rest train."""
    if not 0 <= freeze_layers <= len(base.layers):
        raise ValueError(
            f"freeze_layers={freeze_layers} is outside 0..{len(base.layers)} "
            f"(the number of {base.name} layers)"
        )
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= freeze_layers


def base_model(model: keras.Model) -> keras.Model:
    """The pretrained base inside a model built by ``build_model``."""
    return model.get_layer("vgg16")


def set_frozen_layers(model: keras.Model, freeze_layers: int) -> None:
    """Refreezes the base of a model built by ``build_model`` (recompile to take effect)."""
    _freeze(base_model(model), freeze_layers)


def build_model(config: ModelConfig) -> keras.Model:
    """The inference model: raw RGB [B, H, W, 3] (0..255) -> class probabilities.

    Returns:
      A functional model; output [B, 2] softmax (P(cat), P(dog)) or [B, 1] sigmoid (P(dog)),
      always float32 so the loss is computed in float32 under mixed precision.

    Raises:
      ValueError: For an unknown head or pooling, or a bad freeze count.
      WeightsError: See `build_base`.
    """
    if config.head not in HEADS:
        raise ValueError(f"head={config.head!r}: expected one of {HEADS}")
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling={config.pooling!r}: expected one of {POOLINGS}")
    base = build_base(config)
    inputs = keras.Input(shape=(*config.image_size, 3), name="image")
    x = VGG16Preprocess(name="vgg16_preprocess")(inputs)
    # training=False keeps the base in inference mode even while the head trains: the
    # keras.io transfer-learning recipe. VGG16 has no BatchNorm, so today this changes
    # nothing numerically, but it keeps frozen layers frozen if the base is ever swapped.
    x = base(x, training=False)
    if config.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    units, activation = (2, "softmax") if config.head == "softmax" else (1, "sigmoid")
    # float32 output: under mixed precision a float16 softmax loses the small probabilities
    # the loss depends on (the Keras mixed-precision guide does the same).
    outputs = keras.layers.Dense(units, activation=activation, dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name="vgg16_dogs_vs_cats")


def with_augmenter(model: keras.Model, augmenter: keras.layers.Layer) -> keras.Model:
    """Wraps `model` so `augmenter` runs first, on the accelerator, during training only.

    The wrapper is what trains; `model` (sharing its weights) is what gets saved, so the
    saved model predicts without the augmentation layers.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    return keras.Model(inputs, model(augmenter(inputs)), name="augmented_" + model.name)


def prob_dog(probabilities):
    """P(dog) from either head's output ([B, 2] softmax or [B, 1] sigmoid)."""
    return probabilities[:, 1] if probabilities.shape[-1] == 2 else probabilities[:, 0]


def load_model(model_path: str) -> keras.Model:
    """Loads a model saved by ``train`` (this module registers its custom layers).

    Raises:
      FileNotFoundError: No such file.
      ValueError: The file is not a loadable Keras model.
    """
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"--model={model_path}: no such file (train writes model.keras)")
    try:
        return keras.models.load_model(model_path)
    except (ValueError, OSError, TypeError) as e:
        raise ValueError(f"--model={model_path} is not a Keras model saved by train: {e}") from None
