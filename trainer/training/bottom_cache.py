"""``--fine_tune_cached_views=N``: fine-tune the top of the base on a cache of its frozen bottom.

Why: in the fine-tune phase only the base's last layers train (``fine_tune_freeze_layers``;
for EfficientNet-Lite the last stage and the head convolution), yet a streamed step
still pushes every image through the whole network. The frozen bottom is the larger
part of that forward pass, and it computes the same function in every epoch, so on a
CPU it is run once: over ``N`` augmented views of each training image (the fused crop,
flip and colour jitter, drawn anew for each view) and once over val, un-augmented. Its
output is kept in memory (float16, half the bytes; the top computes in float32) and the
top (the unfrozen base layers + pooling + the head) trains on it.

The top's layers are the inference model's own (shared), so what is saved is the usual
raw-RGB model; its output on an image equals ``top(bottom(image))`` (tested). What it
gives up: each epoch draws from the ``N`` cached views instead of fresh ones.
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
from absl import logging

from pipeline import dataset as dataset_lib
from records.manifest import Manifest
from trainer.models import engine as engine_lib
from trainer.models import model as model_lib
from trainer.training import data as data_lib
from trainer.training import features as features_lib
from trainer.training.config import TrainConfig

CACHE_DTYPE = np.float16


def _cut(base: keras.Model, freeze_layers: int):
    """The one tensor between ``base.layers[:freeze_layers]`` and the rest.

    Raises:
      ValueError: The cut is not a single tensor (mid-block: a later layer also reads a
        tensor from before the cut, like a residual Add), or is outside the base.
    """
    if not 1 <= freeze_layers < len(base.layers):
        raise ValueError(
            f"fine_tune_freeze_layers={freeze_layers}: the cached bottom needs a cut inside "
            f"the {base.name} base, 1..{len(base.layers) - 1}"
        )
    tensor = base.layers[freeze_layers].input
    if isinstance(tensor, (list, tuple)):
        raise ValueError(
            f"fine_tune_freeze_layers={freeze_layers}: layer {base.layers[freeze_layers].name} "
            "takes several inputs; cut the base where one tensor crosses (a block's start)"
        )
    try:
        top = keras.Model(tensor, base.output)
    except ValueError as e:
        raise ValueError(
            f"fine_tune_freeze_layers={freeze_layers}: the {base.name} layers after "
            f"{base.layers[freeze_layers - 1].name} also read tensors from before it ({e}); "
            "cut the base at a block's first layer"
        ) from None
    expected = {id(layer) for layer in base.layers[freeze_layers:]}
    if {id(layer) for layer in top.layers[1:]} != expected:
        raise ValueError(
            f"fine_tune_freeze_layers={freeze_layers}: the layers after the cut are not "
            f"exactly {base.name}'s layers {freeze_layers}.. (a branch crosses the cut); cut "
            "the base at a block's first layer"
        )
    return tensor


def bottom_model(model: keras.Model, freeze_layers: int) -> keras.Model:
    """Raw RGB -> the cut tensor: ``model``'s preprocessing and frozen base layers, shared."""
    base = model_lib.base_model(model)
    bottom = keras.Model(base.input, _cut(base, freeze_layers), name=f"{base.name}_bottom")
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    # build_model's graph is a chain: input, preprocessing, base, pooling, dense, ...
    for layer in model.layers[1 : model.layers.index(base)]:
        x = layer(x)
    return keras.Model(inputs, bottom(x), name=f"{model.name}_bottom")


def top_model(model: keras.Model, freeze_layers: int) -> keras.Model:
    """The cut tensor -> class probabilities: the base's layers after the cut and the head."""
    base = model_lib.base_model(model)
    tensor = _cut(base, freeze_layers)
    top = keras.Model(tensor, base.output, name=f"{base.name}_top")
    inputs = keras.Input(shape=tuple(tensor.shape[1:]), name="bottom")
    x = top(inputs)
    for layer in model.layers[model.layers.index(base) + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_top")


@dataclasses.dataclass(frozen=True)
class BottomCache(features_lib.FeatureCache):
    """The bottom's output: ``views`` augmented views of each train image, val once."""

    views: int = 1


def compute(
    model: keras.Model, manifest: Manifest, config: TrainConfig, max_gb: float | None = None
) -> BottomCache:
    """Runs the frozen bottom over ``config.fine_tune_cached_views`` augmented passes of
    train (the training pipeline's own augmentation) and one plain pass of val.

    Raises:
      ValueError: A bad cut, or the cache would not fit in memory.
    """
    views = config.fine_tune_cached_views
    bottom = bottom_model(model, config.fine_tune_freeze)
    dims = math.prod(bottom.output_shape[1:])
    # Full batches only, as the training pipeline gives them (drop_remainder).
    per_view = manifest.num_examples("train") // config.batch_size * config.batch_size
    num_val = manifest.num_examples("val")
    needed = (views * per_view + num_val) * dims * np.dtype(CACHE_DTYPE).itemsize
    features_lib.check_fits(
        needed,
        max_gb,
        f"--fine_tune_cached_views={views} needs ~{needed / 1e9:.2f} GB for "
        f"{views} x {per_view} train + {num_val} val outputs of {dims} values",
        "use fewer views or --fine_tune_cached_views=0 (stream)",
    )
    start = time.perf_counter()
    # The training pipeline itself (train's own function, so the views are augmented
    # exactly as a streamed epoch would be); each pass reshuffles and draws new crops,
    # flips and jitter.
    train = data_lib.train_pipeline(
        dataclasses.replace(config, input_mode="stream"), manifest
    ).repeat(views)
    val = dataset_lib.eval_dataset(manifest, config.batch_size, image_size=config.image_shape)
    # The frozen bottom is a fixed function here too: LiteRT may run it (see engine).
    bottom_runner = engine_lib.runner(
        bottom, config.engine, views * per_view + num_val, config.model_dir
    )
    cache = BottomCache(
        train=features_lib.extract(
            bottom_runner, train, views * per_view, f"train bottom x{views}", CACHE_DTYPE
        ),
        val=features_lib.extract(bottom_runner, val, num_val, "val bottom", CACHE_DTYPE),
        seconds=0.0,
        views=views,
    )
    cache = dataclasses.replace(cache, seconds=time.perf_counter() - start)
    logging.info(
        "bottom cache: %d x %d train views + %d val of %s (%.0f MB) in %.1f s, %.1f images/s",
        views,
        per_view,
        num_val,
        bottom.output_shape[1:],
        needed / 1e6,
        cache.seconds,
        cache.images_per_sec,
    )
    return cache
