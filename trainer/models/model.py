"""The classifier: a convolutional base (``--backbone``), partly frozen, with a small dense head.

The model takes raw RGB pixels (uint8 or float in 0..255): the base's own preprocessing
is a layer inside it, so the saved model needs no preprocessing code to predict. The
bases and their defaults are listed once, in ``trainer.models.backbones``.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import keras
from absl import logging

from trainer.models import backbones

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
      backbone: One of ``backbones.NAMES``.
      weights: "imagenet", "none", or the path of the backbone's notop weights file (.h5);
        None: "imagenet" where the backbone has ImageNet weights, else "none".
      freeze_layers: How many of the base's layers (counting its input layer) to freeze;
        None: the backbone's default (``backbones.Backbone.freeze_layers``).
      dense_units: Width of the hidden dense layer of the head.
      dropout: Dropout rate after the hidden dense layer.
      head: "softmax" (2 units, the default) or "sigmoid" (1 unit, P(dog)).
      pooling: "flatten" (the classic head) or "avg" (global average pooling).
    """

    image_size: tuple[int, int] = (128, 128)
    backbone: str = "vgg16"
    weights: str | None = None
    freeze_layers: int | None = None
    dense_units: int = 256
    dropout: float = 0.5
    head: str = "softmax"
    pooling: str = "flatten"


# The ImageNet file of the default base, which --weights=PATH names (the flags' help).
NOTOP_WEIGHTS_FILE = backbones.get(ModelConfig.backbone).imagenet_weights((224, 224)).file_name


def default_weights(backbone: str) -> str:
    """What ``weights=None`` means: "imagenet" where the backbone has ImageNet weights."""
    return "imagenet" if backbones.get(backbone).imagenet_weights else "none"


def default_freeze_layers(backbone: str, fine_tune: bool = False) -> int:
    """What ``freeze_layers=None`` means for ``backbone`` (phase one, or fine-tuning)."""
    spec = backbones.get(backbone)
    return spec.fine_tune_freeze_layers if fine_tune else spec.freeze_layers


def resolve_weights(weights: str, backbone: str, image_size: tuple[int, int]) -> str | None:
    """Returns the weights file to load into the base, or None for random weights.

    Args:
      weights: "imagenet" (Keras download, or a conversion from a locally installed
        package, cached in $KERAS_HOME/models), "none", or a path.
      backbone: Whose ImageNet file "imagenet" means.
      image_size: The input size (MobileNetV2 has one ImageNet file per size).

    Raises:
      WeightsError: The ImageNet file cannot be downloaded, the backbone has none, or the
        path does not exist.
    """
    if weights.lower() == "none":
        return None
    spec = backbones.get(backbone)
    if weights == "imagenet":
        if spec.imagenet_weights is None:
            raise WeightsError(
                f"--backbone={backbone} has no ImageNet weights: train it from scratch with "
                "--weights=none, or pass --weights=/path/to/weights.h5 saved from it"
            )
        standard = spec.imagenet_weights(image_size)
        # Where Keras itself caches it: $KERAS_HOME (default ~/.keras) / models.
        keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        cache = os.path.join(keras_home, "models")
        if standard.convert is not None:
            return _converted_weights(standard, backbone, cache)
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        try:
            return keras.utils.get_file(
                standard.file_name,
                standard.url,
                cache_dir=keras_home,
                cache_subdir="models",
                file_hash=standard.file_hash,
            )
        # get_file wraps network failures in a plain Exception; anything here means no file.
        except Exception as e:  # noqa: BLE001
            raise WeightsError(
                f"could not download the {backbone} ImageNet weights ({e}). Either download "
                f"{standard.url} on a machine with internet and put "
                f"{standard.file_name} in {cache} (the Keras cache: $KERAS_HOME/models, "
                f"default ~/.keras/models), or pass --weights=/path/to/{standard.file_name}, "
                "or train from scratch with --weights=none --freeze_layers=0 (or try "
                "--backbone=small_cnn, sized for a CPU)"
            ) from None
        finally:
            socket.setdefaulttimeout(previous_timeout)
    expected = spec.imagenet_weights(image_size).file_name if spec.imagenet_weights else None
    if not os.path.isfile(weights):
        raise WeightsError(
            f"--weights={weights}: no such file; pass imagenet, none, or the path of "
            + (expected or f"a {backbone} weights file (.h5)")
        )
    if not weights.endswith((".h5", ".hdf5")):
        raise WeightsError(
            f"--weights={weights}: expected a Keras .h5 weights file"
            + (f" like {expected}" if expected else "")
        )
    return weights


def _converted_weights(standard: backbones.ImageNetWeights, backbone: str, cache: str) -> str:
    """The cached file ``standard.convert`` writes from a local package: converted on first use."""
    path = os.path.join(cache, standard.file_name)
    if os.path.isfile(path):
        return path
    logging.info("converting the %s ImageNet weights once into %s", backbone, path)
    try:
        standard.convert(path)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise WeightsError(
            f"no {backbone} ImageNet weights: {e}. Or train from scratch with --weights=none"
        ) from None
    return path


def _weights_and_freeze(config: ModelConfig) -> tuple[str, int]:
    weights = config.weights if config.weights is not None else default_weights(config.backbone)
    freeze_layers = (
        config.freeze_layers
        if config.freeze_layers is not None
        else default_freeze_layers(config.backbone)
    )
    return weights, freeze_layers


def build_base(config: ModelConfig) -> keras.Model:
    """The backbone without its top, with its weights loaded and the first layers frozen.

    Raises:
      WeightsError: The weights cannot be obtained or do not fit the backbone.
      ValueError: Unknown backbone, or `freeze_layers` is out of range.
    """
    spec = backbones.get(config.backbone)
    weights, freeze_layers = _weights_and_freeze(config)
    weights_path = resolve_weights(weights, config.backbone, config.image_size)
    base = spec.build((*config.image_size, 3))
    if weights_path is not None:
        try:
            base.load_weights(weights_path)
        except (ValueError, OSError, KeyError) as e:
            standard = spec.imagenet_weights(config.image_size) if spec.imagenet_weights else None
            layout = f" in the standard {standard.file_name} layout" if standard else ""
            raise WeightsError(
                f"{weights_path} does not hold {config.backbone} notop weights{layout}: {e}"
            ) from None
        logging.info("loaded %s base weights from %s", config.backbone, weights_path)
    elif freeze_layers:
        logging.warning(
            "--weights=none: the %s base starts from random weights, so freezing its first "
            "%d layers makes little sense; train all layers with --freeze_layers=0",
            config.backbone,
            freeze_layers,
        )
    # Read by _freeze, here and again when the fine-tune phase refreezes the base.
    base.keep_batch_norm_frozen = weights_path is not None
    _freeze(base, freeze_layers)
    return base


def _freeze(base: keras.Model, freeze_layers: int) -> None:
    """Freezes the first ``freeze_layers`` layers of ``base``; the rest train.

    A pretrained base also keeps every BatchNormalization layer frozen (the keras.io
    fine-tuning advice): in Keras 3 a non-trainable BN layer runs in inference mode, with
    the statistics it came with, while a trainable one would normalise with the current
    batch and overwrite them. ``base(x, training=False)`` cannot do this in Keras 3: a
    functional model passes its own ``training`` flag to nested layers, overriding the
    one recorded in the graph (keras-team/keras#20285). A base trained from scratch
    trains its BN layers like any other.
    """
    if not 0 <= freeze_layers <= len(base.layers):
        raise ValueError(
            f"freeze_layers={freeze_layers} is outside 0..{len(base.layers)} "
            f"(the number of {base.name} layers)"
        )
    keep_batch_norm_frozen = getattr(base, "keep_batch_norm_frozen", False)
    for index, layer in enumerate(base.layers):
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= freeze_layers and not (keep_batch_norm_frozen and batch_norm)


def base_model(model: keras.Model) -> keras.Model:
    """The base (``--backbone``) inside a model built by ``build_model``.

    Raises:
      ValueError: ``model`` has no base named after a registered backbone.
    """
    for layer in model.layers:
        if layer.name in backbones.BACKBONES and isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{model.name} has no base layer named one of {', '.join(backbones.NAMES)}")


def set_frozen_layers(model: keras.Model, freeze_layers: int) -> None:
    """Refreezes the base of a model built by ``build_model`` (recompile to take effect)."""
    _freeze(base_model(model), freeze_layers)


def build_model(config: ModelConfig) -> keras.Model:
    """The inference model: raw RGB [B, H, W, 3] (0..255) -> class probabilities.

    Returns:
      A functional model named ``<backbone>_dogs_vs_cats``; output [B, 2] softmax
      (P(cat), P(dog)) or [B, 1] sigmoid (P(dog)), always float32 so the loss is computed
      in float32 under mixed precision.

    Raises:
      ValueError: For an unknown backbone, head or pooling, or a bad freeze count.
      WeightsError: See `build_base`.
    """
    if config.head not in HEADS:
        raise ValueError(f"head={config.head!r}: expected one of {HEADS}")
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling={config.pooling!r}: expected one of {POOLINGS}")
    spec = backbones.get(config.backbone)
    base = build_base(config)
    inputs = keras.Input(shape=(*config.image_size, 3), name="image")
    x = spec.preprocess(f"{config.backbone}_preprocess")(inputs)
    # No training=False here: Keras 3 would override it (see _freeze, which keeps a
    # pretrained base's batch norm in inference mode by keeping it non-trainable).
    x = base(x)
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
    return keras.Model(inputs, outputs, name=f"{config.backbone}_dogs_vs_cats")


def with_augmenter(
    model: keras.Model,
    augmenter: keras.layers.Layer,
    input_shape: tuple[int | None, ...] | None = None,
) -> keras.Model:
    """Wraps `model` so `augmenter` runs first, on the accelerator, during training only.

    The wrapper is what trains; `model` (sharing its weights) is what gets saved, so the
    saved model predicts without the augmentation layers. `input_shape` (default the
    model's) is for augmenters that change the image size (decode-once crops).
    """
    inputs = keras.Input(shape=input_shape or model.input_shape[1:], name="image")
    return keras.Model(inputs, model(augmenter(inputs)), name="augmented_" + model.name)


def prob_dog(probabilities):
    """P(dog) from either head's output ([B, 2] softmax or [B, 1] sigmoid)."""
    return probabilities[:, 1] if probabilities.shape[-1] == 2 else probabilities[:, 0]


def input_size(model: keras.Model) -> tuple[int, int]:
    """The (height, width) a model takes, from its input shape."""
    height, width = model.input_shape[1:3]
    return int(height), int(width)


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
