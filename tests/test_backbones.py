"""Tests for trainer/models/backbones.py and every backbone through trainer/models/model.py.

All with random weights (weights="none") or files written here: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_train
from trainer.models import backbones, efficientnet_lite
from trainer.models import model as model_lib
from trainer.training.config import TrainConfig

# The smallest input every backbone takes.
SIZE = (32, 32)
# The layer on each side of every default freeze boundary: frozen stages end on the left.
BOUNDARIES = {
    "vgg16": {
        "freeze_layers": ("block4_pool", "block5_conv1"),
        "fine_tune": ("block3_pool", "block4_conv1"),
    },
    "small_cnn": {
        "freeze_layers": (None, "small_cnn_input"),
        "fine_tune": (None, "small_cnn_input"),
    },
    "efficientnet_lite0": {
        "freeze_layers": ("head_relu6", None),
        "fine_tune": ("block14_add", "block15_expand_conv"),
    },
    # 21 blocks: the last stage is block 20.
    "efficientnet_lite1": {
        "freeze_layers": ("head_relu6", None),
        "fine_tune": ("block19_add", "block20_expand_conv"),
    },
    "efficientnet_lite2": {
        "freeze_layers": ("head_relu6", None),
        "fine_tune": ("block19_add", "block20_expand_conv"),
    },
    "mobilenetv2": {
        "freeze_layers": ("out_relu", None),
        "fine_tune": ("block_12_add", "block_13_expand"),
    },
    "resnet50": {
        "freeze_layers": ("conv5_block3_out", None),
        "fine_tune": ("conv4_block6_out", "conv5_block1_1_conv"),
    },
}


def config(backbone: str, **overrides) -> model_lib.ModelConfig:
    settings = dict(image_size=SIZE, backbone=backbone, weights="none", dense_units=8, dropout=0.0)
    return model_lib.ModelConfig(**{**settings, **overrides})


@pytest.mark.parametrize("name", backbones.NAMES)
def test_default_freeze_counts_end_on_stage_boundaries(name):
    spec = backbones.get(name)
    names = [layer.name for layer in spec.build((*SIZE, 3)).layers]
    for key, count in (
        ("freeze_layers", spec.freeze_layers),
        ("fine_tune", spec.fine_tune_freeze_layers),
    ):
        last_frozen, first_trained = BOUNDARIES[name][key]
        assert (names[count - 1] if count else None) == last_frozen, (name, key)
        assert (names[count] if count < len(names) else None) == first_trained, (name, key)


# Lite1 and Lite2 go through Lite0's code path at 4-5 s each (2 busy cores), ResNet50 and
# MobileNetV2 through Keras' applications at 2-3 s: slow only; the fast lane builds the rest.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow)
        if name in ("efficientnet_lite1", "efficientnet_lite2", "resnet50", "mobilenetv2")
        else name
        for name in backbones.NAMES
    ],
)
def test_build_freeze_unfreeze_save_and_reload(name, tmp_path):
    model = model_lib.build_model(config(name, freeze_layers=None))
    base = model_lib.base_model(model)
    spec = backbones.get(name)
    assert base.name == name and model.name == f"{name}_dogs_vs_cats"
    assert model.output_shape == (None, 2)
    frozen = [not layer.trainable for layer in base.layers]
    assert frozen == [i < spec.freeze_layers for i in range(len(base.layers))]
    # The fine-tune phase's refreeze, as fit._run_phase does it.
    model_lib.set_frozen_layers(model, spec.fine_tune_freeze_layers)
    assert [not layer.trainable for layer in base.layers] == [
        i < spec.fine_tune_freeze_layers for i in range(len(base.layers))
    ]
    images = np.random.default_rng(0).integers(0, 256, (2, *SIZE, 3)).astype(np.uint8)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = model_lib.load_model(str(path))
    assert model_lib.base_model(reloaded).name == name
    np.testing.assert_allclose(reloaded(images).numpy(), model(images).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "name, reference",
    [
        ("vgg16", keras.applications.vgg16.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("mobilenetv2", keras.applications.mobilenet_v2.preprocess_input),
        ("small_cnn", lambda x: x / 255.0),
        # The EfficientNet-Lite reference preprocessing (not mobilenet's x / 127.5 - 1).
        ("efficientnet_lite0", lambda x: (x - 127.0) / 128.0),
        ("efficientnet_lite1", lambda x: (x - 127.0) / 128.0),
        ("efficientnet_lite2", lambda x: (x - 127.0) / 128.0),
    ],
)
def test_preprocessing_matches_keras_eagerly_and_in_dataset_map(name, reference):
    images = np.random.default_rng(1).integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
    expected = reference(images.astype(np.float32))
    layer = backbones.get(name).preprocess("p")
    np.testing.assert_allclose(layer(images).numpy(), expected, atol=1e-4)
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(layer)))
    np.testing.assert_allclose(mapped.numpy(), expected, atol=1e-4)


def _bn_moving_mean(model: keras.Model) -> np.ndarray:
    base = model_lib.base_model(model)
    layer = next(
        layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    return layer.moving_mean.numpy().copy()


def _one_step(model: keras.Model) -> None:
    rng = np.random.default_rng(2)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.train_on_batch(
        rng.integers(0, 256, (4, *SIZE, 3)).astype(np.float32), rng.integers(0, 2, (4,))
    )


def test_from_scratch_base_trains_its_batch_norm():
    # A random base follows the model's training flag: its BN statistics must move,
    # or small_cnn would validate with the initial (0, 1) statistics.
    model = model_lib.build_model(config("small_cnn"))
    before = _bn_moving_mean(model)
    _one_step(model)
    assert not np.allclose(before, _bn_moving_mean(model))


def test_pretrained_base_keeps_batch_norm_in_inference_mode(tmp_path):
    # Pretrained (a weights file): even with every layer unfrozen, and again after the
    # fine-tune refreeze, its BN layers stay frozen, so their statistics stay the file's.
    # (small_cnn: a random MobileNetV2 in inference mode passes on almost no signal.)
    source = backbones.get("small_cnn").build((*SIZE, 3))
    path = tmp_path / "small_cnn.weights.h5"
    source.save_weights(path)
    model = model_lib.build_model(config("small_cnn", weights=str(path), freeze_layers=0))
    model_lib.set_frozen_layers(model, 0)
    base = model_lib.base_model(model)
    for layer in base.layers:
        assert layer.trainable != isinstance(layer, keras.layers.BatchNormalization), layer.name
    before = _bn_moving_mean(model)
    kernel_before = base.layers[1].kernel.numpy().copy()
    _one_step(model)
    np.testing.assert_array_equal(before, _bn_moving_mean(model))
    assert not np.array_equal(kernel_before, base.layers[1].kernel.numpy())


def test_defaults_follow_the_backbone():
    assert model_lib.default_weights("vgg16") == "imagenet"
    assert model_lib.default_weights("small_cnn") == "none"
    small = TrainConfig(records_dir="r", model_dir="m", backbone="small_cnn")
    assert small.model_config().weights is None and small.fine_tune_freeze == 0
    model = model_lib.build_model(dataclasses.replace(small.model_config(), image_size=SIZE))
    assert all(layer.trainable for layer in model_lib.base_model(model).layers)
    vgg = TrainConfig(records_dir="r", model_dir="m")
    assert vgg.fine_tune_freeze == 11
    assert (
        TrainConfig(records_dir="r", model_dir="m", fine_tune_freeze_layers=7).fine_tune_freeze == 7
    )
    with pytest.raises(ValueError, match="backbone='resnet18': expected one of vgg16, small_cnn"):
        TrainConfig(records_dir="r", model_dir="m", backbone="resnet18")


def test_small_cnn_has_no_imagenet_weights():
    with pytest.raises(
        model_lib.WeightsError, match="small_cnn has no ImageNet weights.*--weights=none"
    ):
        model_lib.build_model(config("small_cnn", weights="imagenet"))


@pytest.mark.parametrize(
    "name, file_name",
    [
        ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("mobilenetv2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"),
    ],
)
def test_imagenet_download_failure_says_what_to_do(name, file_name, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    requested = []

    def no_network(fname, origin, **kwargs):
        requested.append((fname, origin, kwargs.get("file_hash")))
        raise Exception(f"URL fetch failure on {origin}: None")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    with pytest.raises(model_lib.WeightsError) as error:
        model_lib.resolve_weights("imagenet", name, (128, 128))
    # The file Keras' own keras.applications constructor downloads and caches.
    assert requested[0][0] == file_name and requested[0][1].endswith("/" + file_name)
    message = str(error.value)
    assert file_name in message and str(tmp_path / "keras_home" / "models") in message
    assert f"--weights=/path/to/{file_name}" in message and "--weights=none" in message


def test_efficientnet_lite_backbones_come_from_their_variants():
    # Name, weights file, ImageNet head and native size all of the same variant: a
    # copy-paste slip would give Lite2 the Lite1 file or head. (That each file converts
    # from its own package: tests/test_efficientnet_lite.py.)
    names = [name for name in backbones.NAMES if name.startswith("efficientnet_lite")]
    assert names == list(efficientnet_lite.VARIANTS)
    for name in names:
        spec, variant = backbones.get(name), efficientnet_lite.VARIANTS[name]
        assert spec.imagenet_weights((96, 96)).file_name == f"{name}_imagenet_notop.weights.h5"
        assert spec.native_size == variant.native_size
        bias = efficientnet_lite.imagenet_state_dict(name)["_fc.bias"]
        np.testing.assert_array_equal(spec.imagenet_classifier()[1], bias)
    assert [backbones.get(name).native_size for name in names] == [224, 240, 260]
    assert backbones.get("vgg16").native_size is None


def test_mobilenetv2_weights_file_follows_the_image_size():
    weights = backbones.get("mobilenetv2").imagenet_weights
    assert "_1.0_96_no_top" in weights((96, 96)).file_name
    # Keras has no 100-pixel file: like keras.applications, use the 224 one.
    assert "_1.0_224_no_top" in weights((100, 100)).file_name


@pytest.mark.slow
def test_offline_imagenet_for_an_application_backbone_is_fast_and_clear(
    tiny_records, tmp_path, monkeypatch
):
    # Nothing listens on port 9: the download fails at once, as on a machine offline.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    result = run_train(
        tiny_records, tmp_path / "model", "--backbone=resnet50", "--image_size=32", "--batch_size=8"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.stderr
    assert str(tmp_path / "keras_home" / "models") in result.stderr
    assert "--weights=none" in result.stderr


def test_base_model_of_a_model_without_a_backbone():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no base layer"):
        model_lib.base_model(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
