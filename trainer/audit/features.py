"""The label audit's features: a frozen base's vector for every labelled record, cached.

Each record goes once through the evaluation decode (``pipeline.dataset.eval_dataset``),
the backbone's own preprocessing layer, the pretrained base and global average pooling
(``trainer.training.features.feature_model``, what ``train --input_mode=features`` runs): one
float vector per image, which the audit's cheap head (``trainer.audit.labels``) is then trained
on many times over, in seconds, instead of running the base again. Each image's name
comes with its pixels (``eval_dataset(with_filenames=True)``), so the two cannot fall
out of step. The vectors are kept in an ``.npz`` file, reused while the records and the
base are the same (``fingerprint``).

From the same decoded pixels comes a second, model-free signal for the near-duplicate
search (``trainer.audit.neighbours``): a 16x16 grey ``thumbnails`` of the whole frame.
The eval decode squashes the whole photo to the square input, so a copy squashed or
stretched to another aspect ratio lands on the same square; the base's features of a
small copy (upscaled and blurred for the base) drift from its original's (cosine 0.34-0.75
at a long side of 64 px), while 16x16 is coarse enough that the two thumbnails still
agree (correlation >= 0.99; ``trainer.audit.neighbours`` has the measurements).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from core.progress import Progress
from pipeline import dataset as dataset_lib
from records import schema
from records.manifest import Manifest
from trainer.inference import evaluation
from trainer.models import engine as engine_lib
from trainer.models import model as model_lib
from trainer.training import features

# Side of the grey thumbnail (``thumbnails``): a 64-px copy still has 4 pixels per cell.
THUMBNAIL_SIZE = 16


@dataclasses.dataclass(frozen=True)
class AuditFeatures:
    """One row per labelled record: each split in the eval pipeline's (fixed) order.

    Attributes:
      vectors: float32 [N, D] pooled base outputs.
      labels: int64 [N] given labels (indices into the manifest's class names).
      filenames: Each record's ``image/filename``, non-UTF-8 bytes escaped (``\\xff``).
      splits: Each record's split.
      positions: Each record's position in its split's eval order (0-based), which a
        second ``eval_dataset`` pass reproduces.
      thumbnails: float32 [N, THUMBNAIL_SIZE**2] (``thumbnails``) of the same pixels.
    """

    vectors: np.ndarray
    labels: np.ndarray
    filenames: tuple[str, ...]
    splits: tuple[str, ...]
    positions: np.ndarray
    thumbnails: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def extractor(backbone: str, weights: str, image_size: tuple[int, int]) -> keras.Model:
    """Raw RGB 0..255 [B, H, W, 3] -> the base's globally average-pooled features [B, D].

    Raises:
      trainer.models.model.WeightsError: The weights cannot be obtained.
      ValueError: Unknown backbone.
    """
    # freeze_layers=0 only so that a random-weight base is not frozen with a warning:
    # nothing trains here, and predict_on_batch runs the base in inference mode.
    model = model_lib.build_model(
        model_lib.ModelConfig(
            image_size=image_size,
            backbone=backbone,
            weights=weights,
            freeze_layers=0,
            pooling="avg",
        )
    )
    return features.feature_model(model)


def thumbnails(images: tf.Tensor | np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32 [B, THUMBNAIL_SIZE**2]: each image's grey thumbnail,
    less its mean, scaled to norm 1 (so a dot product is the Pearson correlation).

    Takes the images as the eval decode made them: the whole frame squashed to the square,
    so a copy at another aspect ratio gives the same thumbnail. Mean and norm removed: a
    copy brightened or with more contrast still matches. A flat image (no contrast) is all
    zeros: it correlates with nothing.
    """
    return thumbnail_ops(tf.convert_to_tensor(images)).numpy()


def thumbnail_ops(images: tf.Tensor) -> tf.Tensor:
    """``thumbnails`` as TensorFlow ops, for a ``tf.data`` map: ``extract`` computes them
    beside the decode, on tf.data's threads, not on the main thread between the base's
    batches (where they held up the next LiteRT call: docs/limits.md)."""
    # "area" averages every pixel of a cell: the thumbnail of a sharp original and of a
    # blurred small copy are then the same means, where bilinear would sample a few pixels.
    small = tf.image.resize(
        tf.cast(images, tf.float32), (THUMBNAIL_SIZE, THUMBNAIL_SIZE), method="area"
    )
    grey = tf.reshape(tf.image.rgb_to_grayscale(small), (-1, THUMBNAIL_SIZE**2))
    grey -= tf.reduce_mean(grey, axis=1, keepdims=True)
    norm = tf.norm(grey, axis=1, keepdims=True)
    # A standard deviation below one grey level over the cells: the JPEG's noise, not a
    # picture, whose correlation with anything would be chance.
    return tf.where(norm > THUMBNAIL_SIZE, grey / tf.maximum(norm, 1e-12), 0.0)


def labelled_splits(manifest: Manifest) -> list[str]:
    """The splits of ``manifest`` that hold records (train, val and test where they exist)."""
    return [s for s in schema.SPLITS if s in manifest.splits and manifest.splits[s].shards]


def extract(
    manifest: Manifest,
    model: keras.Model,
    batch_size: int = 64,
    progress: bool | None = None,
    engine: str = "auto",
    cache_dir: str | None = None,
) -> AuditFeatures:
    """Runs every labelled record once through ``model`` (see ``extractor``), and takes
    the ``thumbnails`` of the same pixels.

    Args:
      manifest: The records directory.
      model: Raw RGB images -> feature vectors; its input size is the decode size.
      batch_size: Images per forward pass.
      progress: A progress bar (None: only on a terminal, else a log line every 10 s).
      engine: What runs ``model``, one of ``trainer.models.engine.ENGINES``.
      cache_dir: Where ``litert`` keeps the converted base (the audit's output dir).

    Raises:
      ValueError: The manifest lists no records.
      FileNotFoundError: A shard listed in the manifest is missing.
    """
    image_size = model_lib.input_size(model)
    splits = labelled_splits(manifest)
    if not splits:
        raise ValueError(f"{manifest.path} lists no records; rerun make_records")
    total = sum(map(manifest.num_examples, splits))
    runner = engine_lib.runner(model, engine, total, cache_dir)
    bar = Progress(f"features ({model.name})", total, progress)
    vectors, small, labels, names, split_of, positions = [], [], [], [], [], []
    try:
        for split in splits:
            data = dataset_lib.eval_dataset(
                manifest, batch_size, split=split, image_size=image_size, with_filenames=True
            ).map(
                lambda images, *rest: (images, thumbnail_ops(images), *rest),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            count = 0
            for images, batch_thumbnails, batch_labels, batch_names in data:
                vectors.append(np.asarray(runner.predict_on_batch(images), np.float32))
                small.append(batch_thumbnails.numpy())
                labels.extend(batch_labels.numpy().tolist())
                names.extend(evaluation.display_filename(n) for n in batch_names.numpy())
                count += len(batch_labels)
                bar.update(len(batch_labels))
            split_of.extend([split] * count)
            positions.extend(range(count))
    finally:
        bar.close()
    return AuditFeatures(
        vectors=np.concatenate(vectors),
        labels=np.asarray(labels, np.int64),
        filenames=tuple(names),
        splits=tuple(split_of),
        positions=np.asarray(positions, np.int64),
        thumbnails=np.concatenate(small),
    )


def cached(
    manifest: Manifest,
    output_dir: str,
    *,
    backbone: str,
    weights: str,
    image_size: tuple[int, int],
    batch_size: int = 64,
    seed: int = 0,
    progress: bool | None = None,
    engine: str = "auto",
) -> AuditFeatures:
    """Every labelled record's features, from ``output_dir``'s cache or computed (and cached).

    ``engine`` runs the base (``trainer.models.engine``); litert's flatbuffer is kept in
    ``output_dir`` too.

    Raises:
      ValueError: No labelled records, or an unknown backbone.
      FileNotFoundError: A shard is missing.
      trainer.models.model.WeightsError: The base's weights cannot be obtained.
    """
    os.makedirs(output_dir, exist_ok=True)
    # A random-weight base (--weights=none) is made by the seed, so it is part of the key;
    # a pretrained one is not, so other --seed/--folds reuse its features.
    weights_key = f"none (seed {seed})" if weights.lower() == "none" else weights
    key = fingerprint(manifest, backbone, weights_key, image_size)
    cache = os.path.join(output_dir, f"features-{backbone}-{image_size[0]}x{image_size[1]}.npz")
    features = load(cache, key)
    if features is not None:
        logging.info("features of %d images read from the cache %s", len(features), cache)
        return features
    # Only matters for a base with random weights (--weights=none): same seed, same base.
    keras.utils.set_random_seed(seed)
    base = extractor(backbone, weights, image_size)
    features = extract(manifest, base, batch_size, progress, engine, output_dir)
    save(features, cache, key)
    logging.info("features cached in %s", cache)
    return features


def images_at(
    manifest: Manifest,
    image_size: tuple[int, int],
    wanted: list[tuple[str, int]],
    batch_size: int = 64,
) -> list[np.ndarray]:
    """The images at ``(split, position)`` as the base saw them (a second, decode-only pass).

    The eval order is fixed, so a position from ``extract`` names the same record again.
    Only the wanted images are kept (memory stays at ``len(wanted)`` images).
    """
    found: dict[tuple[str, int], np.ndarray] = {}
    for split in sorted({split for split, _ in wanted}):
        positions = {position for s, position in wanted if s == split}
        data = dataset_lib.eval_dataset(manifest, batch_size, split=split, image_size=image_size)
        start = 0
        for images, _ in data:
            for position in range(start, start + len(images)):
                if position in positions:
                    found[split, position] = images[position - start].numpy()
            start += len(images)
            if start > max(positions):
                break
    return [found[key] for key in wanted]


def fingerprint(
    manifest: Manifest, backbone: str, weights: str, image_size: tuple[int, int]
) -> str:
    """What a cached feature file was made from: the shards (names, counts, sha256) and
    the base. A weights *file* is identified by its path, size and modification time."""
    shards = {
        split: [(s.file, s.num_examples, s.sha256) for s in info.shards]
        for split, info in sorted(manifest.splits.items())
    }
    weights_id = weights
    if os.path.isfile(weights):
        stat = os.stat(weights)
        weights_id = f"{os.path.abspath(weights)}:{stat.st_size}:{stat.st_mtime_ns}"
    text = json.dumps([shards, backbone, weights_id, list(image_size)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save(audit_features: AuditFeatures, path: str, key: str) -> None:
    """Writes ``audit_features`` to ``path`` (.npz), tagged with ``key`` (``fingerprint``)."""
    tmp = path + ".tmp.npz"
    arrays = {
        field.name: np.asarray(getattr(audit_features, field.name))
        for field in dataclasses.fields(AuditFeatures)
    }
    np.savez(tmp, key=key, **arrays)
    # Renamed only when complete: a killed run never leaves a half cache that loads.
    os.replace(tmp, path)


def load(path: str, key: str) -> AuditFeatures | None:
    """The features cached in ``path`` if they were made with ``key``; else None."""
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            logging.info("%s was made from other records or another base; recomputing", path)
            return None
        missing = [f.name for f in dataclasses.fields(AuditFeatures) if f.name not in data]
        if missing:
            logging.info("%s has no %s (an older audit); recomputing", path, ", ".join(missing))
            return None
        return AuditFeatures(
            vectors=data["vectors"],
            labels=data["labels"],
            filenames=tuple(str(s) for s in data["filenames"]),
            splits=tuple(str(s) for s in data["splits"]),
            positions=data["positions"],
            thumbnails=data["thumbnails"],
        )
