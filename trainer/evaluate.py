r"""Evaluates a saved model on a split of a records directory.

  evaluate --model=build/model/model.keras --records_dir=build/records --split=val

Writes <output_prefix>.json and <output_prefix>.txt (default: next to the model,
eval_<split>.*): accuracy, loss, Kaggle log loss, ROC AUC and the confusion matrix.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

from records import config_flags

setting = config_flags.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Settings of ``evaluate``."""

    model: str = setting(help="A .keras model saved by train.")
    records_dir: str = setting(help="Directory made by make_records.")
    split: str = setting("val", "Which split to evaluate.")
    batch_size: int = setting(64, "Batch size.", minimum=1)
    output_prefix: str | None = setting(
        None, "Output path without extension (default: <model dir>/eval_<split>)."
    )

    def __post_init__(self):
        config_flags.check(self)


def main(config: EvaluateConfig) -> int:
    from trainer import evaluation

    prefix = config.output_prefix or os.path.join(
        os.path.dirname(os.path.abspath(config.model)), f"eval_{config.split}"
    )
    metrics = evaluation.evaluate(config.model, config.records_dir, config.split, config.batch_size)
    report = evaluation.format_report(metrics)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(metrics, f, indent=2)
    with open(prefix + ".txt", "w") as f:
        f.write(report)
    print(report, end="")
    logging.info("wrote %s.json and %s.txt", prefix, prefix)
    return 0


def run() -> None:
    config_flags.run(EvaluateConfig, main, __name__)


if __name__ == "__main__":
    run()
