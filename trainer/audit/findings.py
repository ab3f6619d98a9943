"""What the data audit found: the type ``analysis`` builds and ``report`` writes.

A module of its own so that neither of the two imports the other for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from records import exclude
from trainer.audit import features as audit_features
from trainer.audit import labels as labels_lib
from trainer.audit import neighbours as neighbours_lib
from trainer.audit import neither as neither_lib


@dataclasses.dataclass(frozen=True)
class Findings:
    """Everything the audit computed, one entry per image (``features`` order)."""

    features: audit_features.AuditFeatures
    labels: labels_lib.LabelScores
    neither: neither_lib.NeitherScores
    duplicates: neighbours_lib.Duplicates
    has_imagenet_head: bool

    def flagged(self) -> dict[str, np.ndarray]:
        """Issue type -> [N] bool, in the order of ``records.exclude.ISSUE_TYPES`` (the
        words ``flagged`` in data_issues.csv uses and ``make_records --exclude`` reads)."""
        flagged = {
            "neither": self.neither.flagged,
            "duplicate": self.duplicates.keep_instead >= 0,
            "label": self.labels.flagged,
        }
        return {kind: flagged[kind] for kind in exclude.ISSUE_TYPES}
