"""Reporting: ratios against the baselines, targets, the printed table, JSON and a plot."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Target:
    """``variant`` must reach ``ratio`` x the fastest of ``references`` measured in the run.

    Several references: the target is judged against the fastest of them (the faster
    generator, the faster decode ceiling), by images/s and, separately, by CPU time per
    image (where "fastest" is the one spending the least CPU per image).
    """

    variant: str
    references: tuple[str, ...]
    ratio: float


def add_ratios(results: list[dict[str, Any]], baselines: Mapping[str, str]) -> None:
    """Adds ``x_<column>`` (images/s over the baseline's) and ``x_<column>_cpu`` (the
    baseline's CPU ms per image over this one's; higher is better, like the images/s
    ratio) to every result, None where the baseline did not run.

    Args:
      results: One dict per variant (``name``, ``images_per_sec``, ``cpu_ms_per_image``).
      baselines: Baseline variant name -> its column name.
    """
    by_name = {r["name"]: r for r in results}
    for result in results:
        for name, column in baselines.items():
            key = "x_" + column.replace(" ", "_")
            reference = by_name.get(name)
            result[key] = (
                result["images_per_sec"] / reference["images_per_sec"] if reference else None
            )
            result[key + "_cpu"] = (
                reference["cpu_ms_per_image"] / result["cpu_ms_per_image"]
                if reference and result["cpu_ms_per_image"] > 0
                else None
            )


def check_targets(results: list[dict[str, Any]], targets: Sequence[Target]) -> list[dict]:
    """Each target whose variant and at least one reference ran, with MET or not."""
    by_name = {r["name"]: r for r in results}
    checked = []
    for target in targets:
        references = [by_name[name] for name in target.references if name in by_name]
        if target.variant not in by_name or not references:
            continue
        result = by_name[target.variant]
        fastest = max(references, key=lambda r: r["images_per_sec"])
        cheapest = min(references, key=lambda r: r["cpu_ms_per_image"])
        ratio = result["images_per_sec"] / fastest["images_per_sec"]
        cpu_ratio = (
            cheapest["cpu_ms_per_image"] / result["cpu_ms_per_image"]
            if result["cpu_ms_per_image"] > 0
            else None
        )
        checked.append(
            {
                "variant": target.variant,
                "reference": fastest["name"],
                "references": list(target.references),
                "target_ratio": target.ratio,
                "ratio": ratio,
                "met": ratio >= target.ratio,
                "cpu_reference": cheapest["name"],
                "cpu_ratio": cpu_ratio,
                "cpu_met": cpu_ratio is not None and cpu_ratio >= target.ratio,
            }
        )
    return checked


def _ratio(value: float | None) -> str:
    return f"{value:9.2f}x" if value is not None else f"{'-':>10}"


def format_table(report: dict[str, Any]) -> str:
    """The printed table: a row per variant, notes, skipped variants, targets, input wait."""
    columns = list(report["baseline_columns"].values())
    lines = [
        "ratios: 'vs X' = images/s over X's images/s (wall clock); targets also by CPU time "
        "(X's process CPU ms per image over this one's; steadier on a shared machine)",
        f"{'variant':36s} {'images':>7s} {'seconds':>8s} {'images/s':>9s} {'cpu ms/img':>10s} "
        + " ".join(f"{'vs ' + c:>10s}" for c in columns),
    ]
    for r in report["results"]:
        lines.append(
            f"{r['name']:36s} {r['images']:7d} {r['seconds']:8.2f} {r['images_per_sec']:9.0f} "
            f"{r['cpu_ms_per_image']:10.3f} "
            + " ".join(_ratio(r["x_" + c.replace(" ", "_")]) for c in columns)
        )
    for r in report["results"]:
        if r.get("note"):
            lines.append(f"note {r['name']}: {r['note']}")
    for name, reason in report["skipped"].items():
        lines.append(f"{name:36s} skipped: {reason}")
    machine = report["machine"]
    lines.append(
        f"cores: {machine['cores']}; load average before/after: "
        f"{machine.get('load_before')} / {machine.get('load_after')}"
    )
    for t in report["targets"]:
        by_cpu = (
            f"{t['cpu_ratio']:.3f}x vs {t['cpu_reference']} {'MET' if t['cpu_met'] else 'NOT MET'}"
            if t["cpu_ratio"] is not None
            else "n/a"
        )
        lines.append(
            f"target {t['variant']} >= {t['target_ratio']}x the fastest of "
            f"{', '.join(t['references'])}: by images/s {t['ratio']:.3f}x vs {t['reference']} "
            f"{'MET' if t['met'] else 'NOT MET'}; by CPU time per image {by_cpu}"
        )
    for w in report["input_wait"]:
        lines.append(
            f"input wait per step (2-layer stand-in model), {w['name']}: "
            f"{w['input_wait_ms_per_step']:.1f} ms ({w['input_wait_percent']:.0f}% of step "
            f"time; compute {w['compute_ms_per_step']:.1f} ms)"
        )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def plot_bars(
    names: Sequence[str],
    values: Sequence[float],
    path: str,
    title: str,
    xlabel: str,
    highlight: Sequence[bool] | None = None,
    log: bool = False,
) -> None:
    """Horizontal bar chart (one bar per name, labelled with its value) saved as PNG;
    highlighted bars blue, the others grey; ``log`` for values spanning decades."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    highlight = highlight or [True] * len(names)
    figure, axes = plt.subplots(figsize=(9, 0.5 * len(names) + 1.5))
    colors = ["tab:blue" if h else "tab:gray" for h in highlight]
    bars = axes.barh(list(names), list(values), color=colors)
    axes.bar_label(
        bars, labels=[f"{v:,.1f}" if v < 100 else f"{v:,.0f}" for v in values], padding=3
    )
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=10)
    if log:
        axes.set_xscale("log")
        axes.set_xlim(max(min(values, default=1.0) / 2, 1e-3), max(values, default=1.0) * 6)
    else:
        axes.set_xlim(0, max(list(values) + [1.0]) * 1.18)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot(results: list[dict[str, Any]], path: str, subtitle: str) -> None:
    """images/s per variant; pipeline variants in blue, baselines in grey."""
    plot_bars(
        [r["name"] for r in results],
        [r["images_per_sec"] for r in results],
        path,
        f"Input throughput\n{subtitle}",
        "images / second (higher is better)",
        [r["kind"] != "baseline" for r in results],
    )
