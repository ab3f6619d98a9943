"""Tests for pipeline.dataset: modes, determinism, sharding, errors (tiny hand-built records)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_jpeg_bytes, write_records
from pipeline import dataset, decode, shards
from records import schema
from records.manifest import Manifest


def _split_items(count: int, offset: int):
    return [
        (
            make_jpeg_bytes(40 + 8 * (i % 3), 56 + 8 * (i % 2), seed=offset + i),
            i % 2,
            f"{schema.CLASS_NAMES[i % 2]}.{offset + i}.jpg",
        )
        for i in range(count)
    ]


def _eval_fingerprints(items, image_size=(32, 32)) -> dict[bytes, tuple[str, int]]:
    """Maps the eval decode of each written JPEG to its (filename, label)."""
    return {
        decode.decode_and_resize(tf.constant(encoded), image_size).numpy().tobytes(): (name, label)
        for encoded, label, name in items
    }


def _collect(ds) -> tuple[list[np.ndarray], list[int]]:
    images, labels = [], []
    for batch_images, batch_labels in ds.as_numpy_iterator():
        images.extend(batch_images)
        labels.extend(batch_labels.tolist())
    return images, labels


@pytest.fixture
def records(tmp_path: pathlib.Path):
    items = {"train": _split_items(24, 0), "val": _split_items(11, 500)}
    records_dir = tmp_path / "records"
    write_records(records_dir, items, num_shards=3)
    return records_dir, items


def test_train_batches_shapes_dtypes_and_one_pass(tiny_records):
    ds = dataset.train_dataset(Manifest.load(str(tiny_records)), 8, image_size=(32, 48), seed=0)
    assert ds.element_spec[0].shape.as_list() == [8, 32, 48, 3]  # static: drop_remainder
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 3  # 24 examples, one pass, not repeated
    for images, labels in batches:
        assert images.dtype == np.uint8 and images.shape == (8, 32, 48, 3)
        assert labels.dtype == np.int32 and set(labels.tolist()) <= {0, 1}
        assert images.max() > 100 and images.std() > 5
    assert (
        len(list(dataset.train_dataset(Manifest.load(str(tiny_records)), 10).as_numpy_iterator()))
        == 2
    )


def test_eval_sees_every_example_once_with_its_label(records):
    records_dir, items = records
    fingerprints = _eval_fingerprints(items["val"])
    ds = dataset.eval_dataset(Manifest.load(str(records_dir)), 4, image_size=(32, 32))
    sizes = [len(labels) for _, labels in ds.as_numpy_iterator()]
    assert sizes == [4, 4, 3]  # last partial batch kept
    images, labels = _collect(ds)
    seen = [fingerprints[image.tobytes()] for image in images]
    assert sorted(name for name, _ in seen) == sorted(name for _, _, name in items["val"])
    assert [label for _, label in seen] == labels


def test_eval_with_filenames_gives_each_image_its_own_name(tmp_path):
    items = _split_items(9, 700)
    # A name that is not UTF-8 (stored as its bytes, as make_records stores it).
    items[4] = (items[4][0], items[4][1], "cat.\udcff.jpg")
    write_records(tmp_path / "records", {"val": items}, num_shards=3)
    fingerprints = _eval_fingerprints(items)
    manifest = Manifest.load(str(tmp_path / "records"))
    ds = dataset.eval_dataset(manifest, 4, image_size=(32, 32), with_filenames=True)
    seen = []
    for images, labels, filenames in ds.as_numpy_iterator():
        for image, label, raw in zip(images, labels, filenames):
            name = raw.decode("utf-8", "surrogateescape")
            # The name belongs to this very image, and so does the label.
            assert fingerprints[image.tobytes()] == (name, label)
            seen.append(name)
    assert sorted(seen) == sorted(name for _, _, name in items)
    # Without the option: the same images in the same order, and pairs as before.
    plain = _collect(dataset.eval_dataset(manifest, 4, image_size=(32, 32)))
    assert [fingerprints[image.tobytes()][0] for image in plain[0]] == seen


def test_deterministic_mode_reproduces_batches(records):
    records_dir, _ = records

    def run(seed):
        ds = dataset.train_dataset(
            Manifest.load(str(records_dir)), 6, image_size=32, seed=seed, deterministic=True
        )
        return _collect(ds)

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(np.stack(first[0]), np.stack(again[0]))
    assert first[1] == again[1]
    assert not np.array_equal(np.stack(first[0]), np.stack(other[0]))


def test_epochs_differ_and_augmentation_changes_images(records):
    records_dir, items = records
    ds = dataset.train_dataset(
        Manifest.load(str(records_dir)), 24, image_size=32, seed=1, deterministic=True
    )
    epoch1, epoch2 = (next(ds.as_numpy_iterator())[0] for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)  # reshuffled and re-augmented
    plain = _eval_fingerprints(items["train"])
    augmented_images, _ = _collect(ds)
    assert sum(image.tobytes() in plain for image in augmented_images) < 3
    unaugmented, _ = _collect(
        dataset.train_dataset(Manifest.load(str(records_dir)), 24, image_size=32, augment="none")
    )
    assert all(image.tobytes() in plain for image in unaugmented)


def _solid_jpeg(value: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.clip(value + rng.normal(0, 6, size=(60, 80, 3)), 0, 255).astype(np.uint8)
    return tf.io.encode_jpeg(image).numpy()


@pytest.mark.parametrize("augment", ["fused", "keras_cv_data"])
def test_augmentation_never_changes_labels(tmp_path, augment):
    # Cats are dark, dogs bright: after any augmentation an image's brightness still
    # tells its label, so each output label can be checked against its image.
    items = [(_solid_jpeg(50 if i % 2 == 0 else 205, i), i % 2, f"x.{i}.jpg") for i in range(16)]
    write_records(tmp_path / "r", {"train": items}, num_shards=2)
    ds = dataset.train_dataset(
        Manifest.load(str(tmp_path / "r")), 4, image_size=24, augment=augment, seed=3
    )
    for _ in range(2):
        images, labels = _collect(ds)
        assert len(labels) == 16 and sorted(labels) == [0] * 8 + [1] * 8
        for image, label in zip(images, labels):
            assert (image.mean() > 127.5) == bool(label)


# By example (more workers than files) reads every file in every worker: ~3 s, slow only.
@pytest.mark.parametrize(
    "num_workers,mode", [(3, "file"), pytest.param(5, "example", marks=pytest.mark.slow)]
)
def test_per_worker_sharding_is_disjoint_and_complete(tmp_path, num_workers, mode, caplog):
    items = _split_items(10, 0)
    num_shards = 4 if mode == "example" else 6
    write_records(tmp_path / "r", {"val": items, "train": items}, num_shards=num_shards)
    fingerprints = _eval_fingerprints(items)
    for kind in ("eval", "train"):
        seen = []
        for worker in range(num_workers):
            context = tf.distribute.InputContext(num_workers, worker, num_workers)
            if kind == "eval":
                ds = dataset.eval_dataset(
                    Manifest.load(str(tmp_path / "r")),
                    num_workers,
                    image_size=32,
                    input_context=context,
                )
            else:
                ds = dataset.train_dataset(
                    Manifest.load(str(tmp_path / "r")),
                    num_workers,
                    image_size=32,
                    augment="none",
                    input_context=context,
                )
            images, _ = _collect(ds)
            seen.extend(fingerprints[image.tobytes()][0] for image in images)
        assert len(seen) == len(set(seen)) == 10, (kind, seen)
    if mode == "example":
        assert "sharding by example" in caplog.text


def test_batch_size_must_divide_over_replicas(tiny_records):
    context = tf.distribute.InputContext(1, 0, 3)
    with pytest.raises(ValueError, match="not divisible by 3 replicas"):
        dataset.train_dataset(Manifest.load(str(tiny_records)), 8, input_context=context)


def test_no_manifest_or_no_split_is_a_clear_error(tmp_path, tiny_records):
    with pytest.raises(FileNotFoundError, match="no manifest.json in .*nothing.*make_records"):
        Manifest.load(str(tmp_path / "nothing"))
    with pytest.raises(
        ValueError, match=r"lists no shards for split 'test' \(it has \['train', 'val'\]\)"
    ):
        dataset.eval_dataset(Manifest.load(str(tiny_records)), 4, split="test")


def test_missing_shard_names_the_file(tiny_records):
    (tiny_records / schema.shard_name("val", 1, 2)).unlink()
    with pytest.raises(FileNotFoundError, match="val-00001-of-00002"):
        dataset.eval_dataset(Manifest.load(str(tiny_records)), 4)


@pytest.mark.parametrize("damage", ["flip_byte", "cut_mid_record", "cut_at_record_boundary"])
def test_corrupt_shard_stops_with_its_name(tiny_records, damage):
    path = tiny_records / schema.shard_name("train", 1, 2)
    data = bytearray(path.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "cut_mid_record":
        data = data[: len(data) // 2]
    else:
        sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
        data = data[: sum(size + 16 for size in sizes[:-1])]  # 16 bytes of framing each
    path.write_bytes(bytes(data))
    ds = dataset.train_dataset(Manifest.load(str(tiny_records)), 4, image_size=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00001-of-00002"):
        _collect(ds)


def test_shards_read_in_several_chunks_stay_exact_and_checked(records, monkeypatch):
    # Shards are counted and parsed in chunks; with chunks of 2 every shard spans several
    # (and most end in a partial one): still every example once, and a shard cut at a
    # record boundary still stops the run naming it.
    monkeypatch.setattr(shards, "_READ_CHUNK", 2)
    records_dir, items = records
    fingerprints = _eval_fingerprints(items["val"])
    images, labels = _collect(
        dataset.eval_dataset(Manifest.load(str(records_dir)), 4, image_size=(32, 32))
    )
    seen = [fingerprints[image.tobytes()] for image in images]
    assert sorted(name for name, _ in seen) == sorted(name for _, _, name in items["val"])
    assert [label for _, label in seen] == labels
    train = dataset.train_dataset(Manifest.load(str(records_dir)), 4, image_size=16, seed=0)
    assert sum(len(batch_labels) for _, batch_labels in train.as_numpy_iterator()) == 24

    path = records_dir / schema.shard_name("train", 2, 3)
    sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    path.write_bytes(path.read_bytes()[: sum(size + 16 for size in sizes[:-2])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00002-of-00003"):
        _collect(dataset.train_dataset(Manifest.load(str(records_dir)), 4, image_size=16))


def test_bad_arguments_are_rejected(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    with pytest.raises(ValueError, match="augment='heavy': expected one of fused"):
        dataset.train_dataset(manifest, 4, augment="heavy")
    with pytest.raises(ValueError, match="batch_size"):
        dataset.eval_dataset(manifest, 0)


def test_cache_keeps_every_pass_complete(tiny_records):
    manifest = Manifest.load(str(tiny_records))
    train = dataset.train_dataset(manifest, 8, cache=True, seed=0)
    assert [len(_collect(train)[1]) for _ in range(2)] == [24, 24]
    val = dataset.eval_dataset(manifest, 5, cache=True)
    assert [len(_collect(val)[1]) for _ in range(2)] == [12, 12]


@pytest.mark.parametrize("augment", ["none", "keras_cv_model"])
def test_decode_only_modes_give_the_eval_decode_in_shuffled_order(tiny_records, augment):
    manifest = Manifest.load(str(tiny_records))
    plain = {
        image.tobytes() for image in _collect(dataset.eval_dataset(manifest, 4, split="train"))[0]
    }
    images, _ = _collect(dataset.train_dataset(manifest, 8, augment=augment, seed=0))
    assert len(images) == 24 and {image.tobytes() for image in images} == plain


def test_small_records_skip_the_ratio_branch(tiny_records):
    manifest_path = tiny_records / schema.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    assert decode.max_useful_ratio(Manifest.load(str(tiny_records)).max_short_side, 128) == 8
    manifest["settings"]["max_short_side"] = 160
    manifest_path.write_text(json.dumps(manifest))
    assert decode.max_useful_ratio(Manifest.load(str(tiny_records)).max_short_side, 128) == 1
    images, labels = _collect(
        dataset.train_dataset(Manifest.load(str(tiny_records)), 8, image_size=32)
    )
    assert len(labels) == 24 and images[0].shape == (32, 32, 3)


def test_tf_data_service_runs_the_pipeline(tiny_records):
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(  # noqa: F841 (keeps it alive)
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address)
    )
    ds = dataset.train_dataset(
        Manifest.load(str(tiny_records)), 8, image_size=16, data_service=dispatcher.target
    )
    # Endless through the service (one job over the repeated chain): one pass, 3 batches.
    images, labels = _collect(ds.take(3))
    assert len(labels) == 24 and images[0].dtype == np.uint8
