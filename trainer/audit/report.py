"""What the data audit writes: CSVs for programs, pictures and one page for people.

* ``data_issues.csv``: one row per image, most suspect first (see ``COLUMNS``); its
  ``filename`` and ``flagged`` columns are what ``make_records --exclude`` reads.
  Ranks run from 1 (most suspect) to N within each issue type; every score is "higher =
  more suspect".
* ``duplicates.csv``: every near-duplicate pair, most similar first, and whether it
  straddles train and val.
* ``neither.png``, ``label_issues.png``, ``duplicates.png``: the top suspects of each
  type (pairs side by side), titled; ``index.html``: the counts and the pictures.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import os

import numpy as np

from records import schema
from records.manifest import Manifest
from trainer import plots
from trainer.audit import features as audit_features
from trainer.audit.findings import Findings

CSV_NAME = "data_issues.csv"
PAIRS_NAME = "duplicates.csv"
INDEX_NAME = "index.html"
PICTURES = {"neither": "neither.png", "label": "label_issues.png", "duplicate": "duplicates.png"}
COLUMNS = (
    "filename",
    "split",
    "given_label",
    "flagged",
    "label_rank",
    "label_score",
    "neither_rank",
    "neither_score",
    "duplicate_of",
    "duplicate_similarity",
    "duplicate_crosses_split",
    "p_given_label",
    "predicted_label",
    "imagenet_animal_probability",
    "outlier_score",
    "fold",
)
PAIR_COLUMNS = ("rank", "filename", "split", "other", "other_split", "similarity", "crosses_split")


@dataclasses.dataclass(frozen=True)
class Written:
    """What ``write`` wrote, and the counts it reports.

    Attributes:
      csv_path, pairs_path, index_path: The files.
      pictures: Issue type -> its picture (none when ``num_show`` is 0).
      num_images: Images audited.
      flagged: Issue type -> images flagged.
      num_pairs, num_crossing: Near-duplicate pairs, and those straddling train and val.
      label_accuracy: Out-of-fold accuracy of the label head.
      has_imagenet_head: The neither score used the ImageNet head (else the outlier alone).
      top: Issue type -> the most suspect file names (up to 10).
    """

    csv_path: str
    pairs_path: str
    index_path: str
    pictures: dict[str, str]
    num_images: int
    flagged: dict[str, int]
    num_pairs: int
    num_crossing: int
    label_accuracy: float
    has_imagenet_head: bool
    top: dict[str, tuple[str, ...]]


def ranks(score: np.ndarray) -> np.ndarray:
    """1 for the highest score ... N (stable: ties keep the record order)."""
    order = np.argsort(-score, kind="stable")
    result = np.empty(len(score), np.int64)
    result[order] = np.arange(1, len(score) + 1)
    return result


def _rows(findings: Findings) -> list[list]:
    f, names, splits = findings.features, findings.features.filenames, findings.features.splits
    label_score = 1.0 - findings.labels.given
    label_rank, neither_rank = ranks(label_score), ranks(findings.neither.score)
    flagged = findings.flagged()
    duplicates = findings.duplicates
    similarity = dict()
    for i, j, s in duplicates.pairs:
        similarity[i, j] = similarity[j, i] = s
    rows = []
    for i in range(len(f)):
        other = int(duplicates.closest[i])
        rows.append(
            [
                names[i],
                splits[i],
                schema.CLASS_NAMES[f.labels[i]],
                ";".join(kind for kind, is_flagged in flagged.items() if is_flagged[i]),
                int(label_rank[i]),
                f"{label_score[i]:.6f}",
                int(neither_rank[i]),
                f"{findings.neither.score[i]:.6f}",
                names[other] if other >= 0 else "",
                f"{similarity[i, other]:.4f}" if other >= 0 else "",
                int(other >= 0 and splits[other] != splits[i]) if other >= 0 else "",
                f"{findings.labels.given[i]:.6f}",
                schema.CLASS_NAMES[int(np.argmax(findings.labels.probabilities[i]))],
                "" if np.isnan(findings.neither.animal[i]) else f"{findings.neither.animal[i]:.6f}",
                f"{findings.neither.outlier[i]:.6f}",
                int(findings.labels.fold_of[i]),
            ]
        )
    # Flagged rows first, then by the best rank over the types: what to look at first.
    rows.sort(key=lambda row: (row[3] == "", min(row[4], row[6])))
    return rows


def _write_csv(path: str, header, rows) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pairs(findings: Findings) -> list[tuple[int, int, float]]:
    """The near-duplicate pairs, each as (the copy to drop, the other, similarity)."""
    keep_instead = findings.duplicates.keep_instead
    return [
        (i, j, s) if keep_instead[i] >= 0 or keep_instead[j] < 0 else (j, i, s)
        for i, j, s in findings.duplicates.pairs
    ]


def _pair_rows(findings: Findings) -> list[list]:
    names, splits = findings.features.filenames, findings.features.splits
    return [
        [rank, names[i], splits[i], names[j], splits[j], f"{s:.4f}", int(splits[i] != splits[j])]
        for rank, (i, j, s) in enumerate(_pairs(findings), start=1)
    ]


def _title(findings: Findings, i: int, kind: str) -> str:
    f = findings.features
    flags = [k for k, v in findings.flagged().items() if v[i]]
    head = f"{f.filenames[i]}\n{f.splits[i]}, given {schema.CLASS_NAMES[f.labels[i]]}"
    mark = f" FLAGGED {'+'.join(flags)}" if flags else ""
    if kind == "neither":
        animal = findings.neither.animal[i]
        detail = f"neither {findings.neither.score[i]:.3f}" + (
            "" if np.isnan(animal) else f", P(dog or cat) {animal:.3f}"
        )
    else:
        detail = f"P(given label) {findings.labels.given[i]:.3f}"
    return f"{head}{mark}\n{detail}"


def _pictures(findings, manifest, output_dir, image_size, num_show, batch_size) -> dict:
    f = findings.features
    shown = {
        "neither": [int(i) for i in np.argsort(-findings.neither.score, kind="stable")[:num_show]],
        "label": [int(i) for i in np.argsort(findings.labels.given, kind="stable")[:num_show]],
        # Pairs side by side: the dropped copy, then the kept one.
        "duplicate": [x for i, j, _ in _pairs(findings)[: max(1, num_show // 2)] for x in (i, j)],
    }
    wanted = sorted({i for indices in shown.values() for i in indices})
    pictures = audit_features.images_at(
        manifest, image_size, [(f.splits[i], int(f.positions[i])) for i in wanted], batch_size
    )
    image_of = {i: np.clip(p, 0, 255).astype(np.uint8) for i, p in zip(wanted, pictures)}
    written = {}
    for kind, indices in shown.items():
        path = os.path.join(output_dir, PICTURES[kind])
        if kind == "duplicate":
            similarity = {(i, j): s for i, j, s in _pairs(findings)}
            titles = []
            for a, b in zip(indices[::2], indices[1::2]):
                crossing = " CROSSES SPLITS" if f.splits[a] != f.splits[b] else ""
                titles += [
                    f"{f.filenames[a]} ({f.splits[a]})\nsimilarity {similarity[a, b]:.3f}{crossing}",
                    f"{f.filenames[b]} ({f.splits[b]})",
                ]
            title = f"{len(findings.duplicates.pairs)} near-duplicate pairs, most similar first"
            columns = 4
        else:
            titles = [_title(findings, i, kind) for i in indices]
            title = f"most suspect: {kind}"
            columns = 5
        written[kind] = plots.image_grid(
            [image_of[i] for i in indices],
            titles,
            path,
            columns=columns,
            title=title,
            empty_note="none",
        )
    return written


def _index(path: str, written_counts: dict, pictures: dict, manifest: Manifest) -> str:
    e = html.escape
    items = "".join(
        f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in written_counts.items()
    )
    images = "".join(
        f'<h2>{e(kind)}</h2><img src="{e(os.path.basename(p))}" style="max-width:100%">'
        for kind, p in pictures.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Data audit</title></head><body>"
        f"<h1>Data audit of {e(manifest.path)}</h1><table border='1' cellpadding='4'>{items}"
        f"</table><p>Every image: <a href='{CSV_NAME}'>{CSV_NAME}</a>; near-duplicate pairs: "
        f"<a href='{PAIRS_NAME}'>{PAIRS_NAME}</a>. Act on it: "
        f"<code>make_records --exclude={CSV_NAME} ...</code></p>{images}</body></html>"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def write(
    findings: Findings,
    manifest: Manifest,
    output_dir: str,
    *,
    image_size: tuple[int, int],
    num_show: int = 20,
    batch_size: int = 64,
) -> Written:
    """Writes the CSVs, the pictures (``num_show`` per type; none at 0) and index.html."""
    rows = _rows(findings)
    csv_path = _write_csv(os.path.join(output_dir, CSV_NAME), COLUMNS, rows)
    pairs = _pair_rows(findings)
    pairs_path = _write_csv(os.path.join(output_dir, PAIRS_NAME), PAIR_COLUMNS, pairs)
    pictures = (
        _pictures(findings, manifest, output_dir, image_size, num_show, batch_size)
        if num_show
        else {}
    )
    flagged = {kind: int(v.sum()) for kind, v in findings.flagged().items()}
    num_crossing = sum(row[-1] for row in pairs)
    names = findings.features.filenames
    top = {
        "neither": tuple(names[i] for i in np.argsort(-findings.neither.score, kind="stable")[:10]),
        "label": tuple(names[i] for i in np.argsort(findings.labels.given, kind="stable")[:10]),
        "duplicate": tuple(f"{names[i]} ~ {names[j]}" for i, j, _ in _pairs(findings)[:10]),
    }
    counts = {
        "images audited": len(findings.features),
        **{f"flagged {kind}": n for kind, n in flagged.items()},
        "near-duplicate pairs": len(pairs),
        "pairs straddling train and val": num_crossing,
        "label head out-of-fold accuracy": f"{findings.labels.accuracy:.4f}",
        "neither score": "ImageNet head + outlier"
        if findings.has_imagenet_head
        else "outlier only",
    }
    index_path = _index(os.path.join(output_dir, INDEX_NAME), counts, pictures, manifest)
    return Written(
        csv_path=csv_path,
        pairs_path=pairs_path,
        index_path=index_path,
        pictures=pictures,
        num_images=len(findings.features),
        flagged=flagged,
        num_pairs=len(pairs),
        num_crossing=num_crossing,
        label_accuracy=findings.labels.accuracy,
        has_imagenet_head=findings.has_imagenet_head,
        top=top,
    )
