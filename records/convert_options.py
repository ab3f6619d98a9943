"""The settings of one conversion: what ``make_records``' flags are derived from."""

from __future__ import annotations

import dataclasses
import os

from core import settings
from records.exclude import ISSUE_TYPES, ExcludeError, Exclusion, read_exclusion

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    """Everything a conversion depends on; each field is also a ``make_records`` flag.

    ``num_workers`` is resolved in ``__post_init__``: None means every core, and
    ``single_process`` means 1, so the writer always sees the number it will use.
    """

    inputs: tuple[str, ...] = setting(
        help="Folder, .zip or table of labelled images; repeat the flag for several inputs.",
        repeat=True,
        flag_name="input",
    )
    output_dir: str = setting(help="Directory for the shards and manifest.json.")
    val_fraction: float = setting(
        0.2, "Fraction of images for the val split (chosen by sha256, stable).", minimum=0, below=1
    )
    test_fraction: float = setting(
        0.0,
        "Fraction of images for a held-out test split (by sha256, taken from train only: "
        "val stays as it is); 0: no test split.",
        minimum=0,
        below=1,
    )
    train_shards: int | None = setting(
        None, "Train shard count (default: ~150 MB each, >= 4).", minimum=1
    )
    val_shards: int | None = setting(
        None, "Val shard count (default: ~150 MB each, >= 2).", minimum=1
    )
    test_shards: int | None = setting(
        None, "Test shard count (default: ~150 MB each, >= 2).", minimum=1
    )
    max_short_side: int | None = setting(
        None,
        "Store a re-encoded copy whose shorter side is at most this (never upscaled); "
        "default keeps the original JPEG bytes.",
        minimum=1,
    )
    jpeg_quality: int = setting(
        90, "JPEG quality for re-encoded images (1-95).", minimum=1, maximum=95
    )
    num_workers: int | None = setting(
        None, "Worker processes for reading and decoding images (default: every core).", minimum=1
    )
    single_process: bool = setting(False, "Run everything in this process (for debugging).")
    exclude: str | None = setting(
        None,
        "Leave out these images (skipped as 'excluded by audit'): a file of names as the "
        "records store them (train/cat.1.jpg), one a line, or the audit's data_issues.csv.",
    )
    exclude_issues: tuple[str, ...] | None = setting(
        None,
        "With a CSV --exclude: the issue types that exclude a row "
        f"(default: all of {','.join(ISSUE_TYPES)}).",
        choices=ISSUE_TYPES,
    )
    overwrite: bool = setting(False, "Replace a different conversion in --output_dir.")
    verify: bool = setting(
        False, "Afterwards, read every shard back and check it (as verify_records)."
    )
    # Library-only: a tqdm bar (None: only when stderr is a terminal).
    progress: bool | None = setting(None, flag=False)
    # Resolved from exclude/exclude_issues in __post_init__: the file is read once, here,
    # so that a bad one is a flag error before anything is loaded or written.
    exclusion: Exclusion | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("inputs: at least one --input is required")
        if isinstance(self.inputs, str):
            raise ValueError(f"inputs={self.inputs!r}: a tuple of paths, not one string")
        settings.check(self)
        # Each below 1 is not enough: train gets what is left of the hash range.
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction={self.val_fraction} + --test_fraction={self.test_fraction} "
                f"= {self.val_fraction + self.test_fraction:g} leaves nothing for train; "
                "together they must be < 1"
            )
        if self.test_shards is not None and not self.test_fraction:
            raise ValueError(
                f"test_shards={self.test_shards} needs --test_fraction > 0 (without it "
                "there is no test split)"
            )
        if self.single_process and self.num_workers not in (None, 1):
            raise ValueError(
                f"single_process conflicts with --num_workers={self.num_workers}; pass only one"
            )
        object.__setattr__(self, "exclusion", self._read_exclusion())
        workers = 1 if self.single_process else self.num_workers or os.cpu_count() or 1
        object.__setattr__(self, "num_workers", workers)

    def _read_exclusion(self) -> Exclusion | None:
        if isinstance(self.exclude_issues, str):
            raise ValueError(f"exclude_issues={self.exclude_issues!r}: a tuple, not one string")
        if self.exclude_issues is not None and not self.exclude:
            raise ValueError("exclude_issues needs --exclude=<the audit's data_issues.csv>")
        if self.exclude_issues is not None and not self.exclude_issues:
            raise ValueError(f"exclude_issues is empty; name some of {ISSUE_TYPES}")
        if not self.exclude:
            return None
        try:
            exclusion = read_exclusion(self.exclude, self.exclude_issues)
        except ExcludeError as e:
            raise ValueError(f"exclude: {e}") from None
        if exclusion.kind == "list" and self.exclude_issues is not None:
            raise ValueError(
                f"exclude_issues chooses rows of the audit's CSV, but {self.exclude} is a "
                "plain list of names (no header with filename and flagged columns); drop "
                "--exclude_issues or pass the audit's data_issues.csv"
            )
        return exclusion
