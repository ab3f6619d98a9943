"""Tests for trainer/training/bottom_cache.py: the fine-tune phase on a cached frozen bottom."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from conftest import TINY_TRAIN_SETTINGS
from records.manifest import Manifest
from trainer.models import model as model_lib
from trainer.training import bottom_cache, fit
from trainer.training.config import TrainConfig

# VGG16 at 32 px with random weights: phase one freezes all 19 base layers (features),
# the fine-tune trains block 5 (layers 15..18) on the cached output of blocks 1-4.
TINY = dict(TINY_TRAIN_SETTINGS, freeze_layers=19, pooling="avg", input_mode="features")
CUT = 15


def _tiny_model(**overrides):
    return model_lib.build_model(
        model_lib.ModelConfig(
            image_size=(32, 32), weights="none", dense_units=8, pooling="avg", **overrides
        )
    )


def test_top_of_bottom_is_the_whole_model_and_shares_its_layers():
    model = _tiny_model()
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    bottom = bottom_cache.bottom_model(model, CUT)
    top = bottom_cache.top_model(model, CUT)
    assert bottom.output_shape == (None, 2, 2, 512) and top.input_shape == (None, 2, 2, 512)
    np.testing.assert_allclose(top(bottom(images)), model(images), rtol=1e-5, atol=1e-6)
    model_weights = {id(w) for w in model.weights}
    assert {id(w) for w in top.weights} <= model_weights
    base = model_lib.base_model(model)
    # The top holds exactly the base's layers after the cut, not one before.
    bottom_ids = {id(w) for layer in base.layers[:CUT] for w in layer.weights}
    assert not bottom_ids & {id(w) for w in top.weights}


@pytest.mark.slow
def test_a_cut_that_a_residual_crosses_is_refused():
    # EfficientNet-Lite0's block 14 adds its input to its output: cutting inside the block
    # would leave the Add without its first operand.
    model = _tiny_model(backbone="efficientnet_lite0")
    base = model_lib.base_model(model)
    names = [layer.name for layer in base.layers]
    with pytest.raises(ValueError, match="cut the base at a block's first layer"):
        bottom_cache.top_model(model, names.index("block14_dwconv"))
    # At the block's first layer one tensor crosses: accepted.
    bottom_cache.top_model(model, names.index("block14_expand_conv"))


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="give --fine_tune_epochs too"):
        TrainConfig(records_dir="r", model_dir="m", fine_tune_cached_views=2)
    with pytest.raises(ValueError, match="cannot be used with --data_service"):
        TrainConfig(
            records_dir="r",
            model_dir="m",
            fine_tune_epochs=1,
            fine_tune_cached_views=2,
            data_service="grpc://localhost:1",
        )


def test_the_cache_memory_limit_names_the_way_out(tiny_records):
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir="m",
        fine_tune_epochs=1,
        fine_tune_cached_views=3,
        fine_tune_freeze_layers=CUT,
        **TINY,
    )
    with pytest.raises(ValueError, match=r"needs ~.* GB for 3 x 24 train .* use fewer views"):
        bottom_cache.compute(_tiny_model(), Manifest.load(str(tiny_records)), config, max_gb=1e-9)


@pytest.mark.slow
def test_the_fine_tune_trains_the_top_only_and_ships_the_whole_model(
    tiny_records, tmp_path, monkeypatch
):
    """The learning test of the fine-tune phase: what trains is exactly the unfrozen top.

    It fails if the fine-tune leaves the top's weights as phase one left them, if it
    changes a frozen layer, or if the saved model is not the one that was fine-tuned.
    """
    config = TrainConfig(
        records_dir=str(tiny_records),
        model_dir=str(tmp_path / "model"),
        epochs=1,
        fine_tune_epochs=2,
        fine_tune_freeze_layers=CUT,
        fine_tune_cached_views=2,
        fine_tune_learning_rate=1e-2,
        augment="fused",
        restore_best=False,  # The last epoch's weights: the fine-tune's own result.
        **TINY,
    )
    after_phase_one = {}
    compute = bottom_cache.compute

    def spy(model, manifest, train_config, *args, **kwargs):
        # Called once, when phase one is over and the fine-tune begins.
        after_phase_one.update({w.path: w.numpy().copy() for w in model.weights})
        cache = compute(model, manifest, train_config, *args, **kwargs)
        after_phase_one["cache"] = cache
        return cache

    monkeypatch.setattr(bottom_cache, "compute", spy)
    metrics = fit.train(config)
    cache = after_phase_one.pop("cache")
    # 2 views of the 24 train images (3 full batches of 8 each), val once.
    assert cache.train.features.shape == (2 * 24, 2, 2, 512) and cache.views == 2
    assert cache.train.features.dtype == np.float16
    assert cache.val.features.shape == (12, 2, 2, 512)
    assert metrics["bottom_cache"]["views"] == 2 and metrics["epochs_completed"] == 3

    trained = model_lib.load_model(str(pathlib.Path(config.model_dir) / "model.keras"))
    base = model_lib.base_model(trained)
    for index, layer in enumerate(base.layers):
        for weight in layer.weights:
            before = after_phase_one[weight.path]
            if index < CUT:
                np.testing.assert_array_equal(weight.numpy(), before, err_msg=weight.path)
            else:
                assert not np.array_equal(weight.numpy(), before), f"{weight.path} did not train"
    for name in ("dense", "predictions"):
        kernel = trained.get_layer(name).kernel
        assert not np.array_equal(kernel.numpy(), after_phase_one[kernel.path]), name
    saved = json.loads((pathlib.Path(config.model_dir) / "metrics.json").read_text())
    assert saved["model_epoch"] is None  # --norestore_best: the last epoch's weights.


@pytest.mark.slow
def test_the_frozen_bottom_on_litert_gives_keras_outputs(tiny_records, tmp_path, litert_images):
    manifest = Manifest.load(str(tiny_records))
    model = _tiny_model(freeze_layers=19)
    caches = {
        engine: bottom_cache.compute(
            model,
            manifest,
            TrainConfig(
                records_dir=str(tiny_records),
                model_dir=str(tmp_path / engine),
                fine_tune_epochs=1,
                fine_tune_cached_views=1,
                fine_tune_freeze_layers=CUT,
                engine=engine,
                **TINY,
            ),
        )
        for engine in ("keras", "litert")
    }
    # 1 image to check the flatbuffer, then 3 full batches of 8 train and the 12 val.
    assert sum(litert_images) == 1 + 24 + 12
    assert list((tmp_path / "litert").glob("litert_float32_*.tflite"))
    # Val is decoded the same every pass (the train views are re-augmented): compare it.
    np.testing.assert_allclose(
        caches["litert"].val.features.astype(np.float32),
        caches["keras"].val.features.astype(np.float32),
        rtol=1e-3,
        atol=1e-3,  # float16 storage: its round-off, not the engines'
    )
