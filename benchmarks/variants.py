"""The registry of input variants ``benchmark_input`` can time, in table order.

Each variant is a ``Variant``: its name, what it is, whether it is a baseline (and its
ratio column), what it needs (``--images_dir``, ``--small_records_dir``), whether it is
slow (timed on the ``--slow_max_images`` subset) and a ``build`` function that turns the
run's ``Inputs`` into an iterator factory. Adding a variant is one entry in ``_ALL``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from collections.abc import Callable

import tensorflow as tf

from benchmarks import baselines
from benchmarks.timing import MakeIterator
from pipeline import dataset as dataset_lib
from records.manifest import Manifest

BASELINE, PIPELINE = "baseline", "pipeline"
KINDS: tuple[str, ...] = (BASELINE, PIPELINE)
# What a variant may need beyond --records_dir, and the message when it is missing.
NEEDS: dict[str, str] = {
    "images": "no --images_dir given",
    "small_records": "no --small_records_dir given",
}
SPLIT = "train"


@dataclasses.dataclass
class Inputs:
    """What variants are built from: the run's images, in every form, trimmed alike.

    Attributes:
      batch_size, image_size: For every variant.
      records: Full-resolution records of the timed images.
      small_records: --max_short_side records of the same images, or None.
      slow_records: Full-resolution records of the slow variants' subset.
      paths, labels: Original files of the timed images (empty without --images_dir).
      slow_paths, slow_labels: Original files of the slow subset.
      class_tree: Class-folder tree of symlinks to ``paths`` (image_dataset_from_directory).
      workers: Threads for the threaded legacy generator (the cores).
      cleanup: Closed at the end of the run (temporary files, servers).
    """

    batch_size: int
    image_size: int
    records: Manifest
    small_records: Manifest | None
    slow_records: Manifest
    paths: list[pathlib.Path]
    labels: list[int]
    slow_paths: list[pathlib.Path]
    slow_labels: list[int]
    class_tree: pathlib.Path | None
    workers: int
    cleanup: contextlib.ExitStack

    @property
    def size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)


# Variant.build: Inputs -> (iterator factory, note for the table).
Build = Callable[[Inputs], tuple[MakeIterator, str]]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of producing batches, timed by ``benchmark_input``.

    Attributes:
      name: Row name (also the ``--variants`` value).
      description: One line for the JSON and README.
      kind: BASELINE (an approach the pipeline replaces; others get a ratio against it)
        or PIPELINE.
      build: Makes the iterator factory from the run's ``Inputs``.
      needs: Keys of ``NEEDS`` this variant cannot run without.
      slow: Timed on the seeded random ``--slow_max_images`` subset.
      column: Baselines only: the short name of its ratio column ("vs <column>").
      input_wait: Also measure the stand-in step's input wait on it (``--step_batches``).
    """

    name: str
    description: str
    kind: str
    build: Build
    needs: tuple[str, ...] = ()
    slow: bool = False
    column: str = ""
    input_wait: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind={self.kind!r}, expected one of {KINDS}")
        if self.kind == BASELINE and not self.column:
            raise ValueError(f"{self.name}: a baseline needs a column name")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {sorted(unknown)}")


def _repeated(make_dataset: Callable[[], tf.data.Dataset]) -> MakeIterator:
    # repeat(): the warm-up and the timed batches come from one iterator (no rebuild),
    # and a pass costs what an epoch costs (one shuffle-buffer fill per pass of the data).
    return lambda: iter(make_dataset().repeat())


def _legacy(workers: int | None) -> Build:
    def build(inputs: Inputs) -> tuple[MakeIterator, str]:
        made = baselines.legacy_generator(
            inputs.slow_paths,
            inputs.slow_labels,
            inputs.image_size,
            inputs.batch_size,
            workers=workers or inputs.workers,
        )
        if made is None:
            raise Unavailable("keras.src.legacy is not in this Keras")
        return made

    return build


def _ceiling(dct_method: str) -> Build:
    def build(inputs: Inputs) -> tuple[MakeIterator, str]:
        encoded = [path.read_bytes() for path in inputs.paths]
        return (
            _repeated(lambda: baselines.decode_ceiling(encoded, inputs.batch_size, dct_method)),
            "",
        )

    return build


def _train(records: Callable[[Inputs], Manifest], augment: str) -> Build:
    def build(inputs: Inputs) -> tuple[MakeIterator, str]:
        manifest = records(inputs)
        return (
            _repeated(
                lambda: dataset_lib.train_dataset(
                    manifest, inputs.batch_size, image_size=inputs.size, augment=augment
                )
            ),
            "",
        )

    return build


def _eval(records: Callable[[Inputs], Manifest]) -> Build:
    def build(inputs: Inputs) -> tuple[MakeIterator, str]:
        manifest = records(inputs)
        return (
            _repeated(
                lambda: dataset_lib.eval_dataset(
                    manifest, inputs.batch_size, split=SPLIT, image_size=inputs.size
                )
            ),
            "",
        )

    return build


def _service(num_workers: int) -> Build:
    def build(inputs: Inputs) -> tuple[MakeIterator, str]:
        from pipeline import service

        address = service.start_local_cluster(num_workers, inputs.cleanup)
        manifest = inputs.small_records
        return (
            _repeated(
                lambda: dataset_lib.train_dataset(
                    manifest, inputs.batch_size, image_size=inputs.size, data_service=address
                )
            ),
            "",
        )

    return build


def _decode_once(placement: str) -> Build:
    def build(inputs: Inputs) -> tuple[MakeIterator, str]:
        import time

        from pipeline import decode_once

        manifest = inputs.small_records or inputs.records
        dataset = decode_once.train_dataset(
            manifest, inputs.batch_size, image_size=inputs.size, placement=placement
        )
        # The one-time decode fills the dataset's in-memory cache; every timed pass of
        # the same dataset object is steady state.
        start = time.perf_counter()
        for _ in dataset:
            pass
        seconds = time.perf_counter() - start
        return (lambda: iter(dataset.repeat())), f"one-time decode took {seconds:.1f} s"

    return build


class Unavailable(Exception):
    """A variant cannot run here (the message says why); it is listed as skipped."""


def _full(inputs: Inputs) -> Manifest:
    return inputs.records


def _small(inputs: Inputs) -> Manifest:
    return inputs.small_records


def _slow(inputs: Inputs) -> Manifest:
    return inputs.slow_records


_ALL: tuple[Variant, ...] = (
    Variant(
        "legacy_image_data_generator",
        "keras.src.legacy ImageDataGenerator.flow_from_dataframe, rotation/shift/shear/zoom/"
        "flip, original JPEGs, read on one thread (the seed's default)",
        BASELINE,
        _legacy(1),
        needs=("images",),
        slow=True,
        column="legacy",
    ),
    Variant(
        "legacy_image_data_generator_threads",
        "the same generator read through Keras' worker threads (PyDataset workers=<cores>, "
        "the OrderedEnqueuer model.fit uses)",
        BASELINE,
        _legacy(None),
        needs=("images",),
        slow=True,
        column="legacy thr",
    ),
    Variant(
        "image_dataset_from_directory",
        "keras.utils.image_dataset_from_directory, original JPEGs, no augmentation",
        BASELINE,
        lambda inputs: (
            _repeated(
                lambda: baselines.image_dataset_from_directory(
                    inputs.class_tree, inputs.image_size, inputs.batch_size
                )
            ),
            "",
        ),
        needs=("images",),
        column="idfd",
    ),
    Variant(
        "decode_ceiling",
        "full-resolution tf.io.decode_jpeg (libjpeg's default IDCT) of the original bytes "
        "held in memory, all cores, nothing else",
        BASELINE,
        _ceiling(""),
        needs=("images",),
        column="ceil",
    ),
    Variant(
        "decode_ceiling_fast",
        "the same with dct_method='INTEGER_FAST' (the fastest full-resolution decode, and "
        "the IDCT the pipeline uses)",
        BASELINE,
        _ceiling("INTEGER_FAST"),
        needs=("images",),
        column="ceil fast",
    ),
    Variant(
        "pipeline_train_fused",
        "train_dataset(augment='fused'), full-resolution records",
        PIPELINE,
        _train(_full, "fused"),
        input_wait=True,
    ),
    Variant(
        "pipeline_train_keras_cv",
        "train_dataset(augment='keras_cv_data'), full-resolution records",
        PIPELINE,
        _train(_slow, "keras_cv_data"),
        slow=True,
        input_wait=True,
    ),
    Variant(
        "pipeline_eval",
        "eval_dataset on the same split, full-resolution records",
        PIPELINE,
        _eval(_full),
    ),
    Variant(
        "pipeline160_train_fused",
        "train_dataset(augment='fused'), --max_short_side 160 records",
        PIPELINE,
        _train(_small, "fused"),
        needs=("small_records",),
        input_wait=True,
    ),
    Variant(
        "pipeline160_eval",
        "eval_dataset on the same split, --max_short_side 160 records",
        PIPELINE,
        _eval(_small),
        needs=("small_records",),
    ),
    Variant(
        "pipeline160_train_service1",
        "pipeline160_train_fused run on a tf.data service with 1 worker (dispatcher and "
        "worker in this process, on 127.0.0.1)",
        PIPELINE,
        _service(1),
        needs=("small_records",),
    ),
    Variant(
        "pipeline160_train_service2",
        "the same with 2 service workers",
        PIPELINE,
        _service(2),
        needs=("small_records",),
    ),
    Variant(
        "decode_once_host",
        "train --input_mode=decode_once --augment_placement=host: records (160-px if given) "
        "decoded once to 144x144 uint8 in memory, then crop/flip/jitter per batch on the "
        "host (steady state)",
        PIPELINE,
        _decode_once("host"),
    ),
    Variant(
        "decode_once_accelerator",
        "the same with --augment_placement=accelerator: the host only shuffles and batches "
        "the stored images; the crop runs as the model's first layer (steady state)",
        PIPELINE,
        _decode_once("accelerator"),
    ),
)

VARIANTS: dict[str, Variant] = {variant.name: variant for variant in _ALL}
NAMES: tuple[str, ...] = tuple(VARIANTS)
BASELINES: dict[str, Variant] = {
    name: variant for name, variant in VARIANTS.items() if variant.kind == BASELINE
}
