r"""Evaluates a saved model on a split of a records directory.

  evaluate --model=build/model/model.keras --records_dir=build/records --split=val

--split=test scores the held-out split (make_records --test_fraction > 0): the headline
figure, once the epochs, checkpoint and threshold have been chosen on val.

Writes, under <output_prefix> (default: next to the model, eval_<split>, or
eval_<split>_tta_flip with --tta=flip):

* <prefix>.json and <prefix>.txt: accuracy, loss, Kaggle log loss, ROC AUC, the
  confusion matrix and the most confident mistakes (file name, true label, P(dog));
* <prefix>_confusion.png: the confusion matrix, counts and row percentages;
* <prefix>_mistakes.png: the --num_mistakes most confident mistakes (highest log loss
  first) as the model saw them, each titled with its file name, true label and P(dog).
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

from core import settings
from records import schema
from trainer.inference import tta as tta_lib
from trainer.models import engine as engine_lib

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Settings of ``evaluate``."""

    model: str = setting(help="A .keras model saved by train.")
    records_dir: str = setting(help="Directory made by make_records.")
    split: str = setting(
        "val",
        "Which split to evaluate (test: only with records made with --test_fraction > 0).",
        choices=schema.SPLITS,
    )
    batch_size: int = setting(64, "Batch size.", minimum=1)
    output_prefix: str | None = setting(
        None,
        "Output path without extension (default: <model dir>/eval_<split>, "
        "+ _tta_<mode> with --tta).",
    )
    tta: str = setting(
        "none",
        "Test-time augmentation: flip averages P(dog) over each image and its mirror.",
        choices=tta_lib.TTA_MODES,
    )
    num_mistakes: int = setting(
        16, "Most confident mistakes to show in <prefix>_mistakes.png (0: no picture).", minimum=0
    )
    engine: str = setting(
        "auto",
        "What runs the model: keras, litert (converted once to float32 TFLite, cached beside "
        "--model, run by XNNPACK on every core; the same P(dog) within float32 round-off), "
        "or auto (litert when the split is big enough to pay for the conversion).",
        choices=engine_lib.ENGINES,
    )

    def __post_init__(self):
        settings.check(self)


def output_prefix(config: EvaluateConfig) -> str:
    """Where the outputs go, without extension (see the module docstring)."""
    if config.output_prefix:
        return config.output_prefix
    name = f"eval_{config.split}" + ("" if config.tta == "none" else f"_tta_{config.tta}")
    return os.path.join(os.path.dirname(os.path.abspath(config.model)), name)


def main(config: EvaluateConfig) -> int:
    from trainer import plots
    from trainer.inference import evaluation

    prefix = output_prefix(config)
    result = evaluation.evaluate(
        config.model,
        config.records_dir,
        config.split,
        config.batch_size,
        tta=config.tta,
        num_mistakes=config.num_mistakes,
        engine=config.engine,
    )
    metrics, mistakes = result.metrics, result.mistakes
    report = evaluation.format_report(metrics)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    with open(prefix + ".txt", "w", encoding="utf-8") as f:
        f.write(report)
    # Every example's P(dog), by file name: what predict on the original photos matches.
    result.write_predictions(prefix + "_predictions.csv")
    names = metrics["class_names"]
    where = f"{config.split}, tta={config.tta}"
    confusion_png = plots.plot_confusion(
        metrics["confusion_matrix"],
        names,
        prefix + "_confusion.png",
        f"{where}: accuracy {metrics['accuracy']:.3f}",
    )
    pictures = [confusion_png]
    print(report, end="")
    print(f"confusion matrix: {confusion_png}")
    if config.num_mistakes:
        mistakes_png = plots.plot_mistakes(
            mistakes.images,
            mistakes.filenames,
            mistakes.labels,
            mistakes.prob_dog,
            names,
            prefix + "_mistakes.png",
            f"{where}: the {len(mistakes.labels)} most confident mistakes (highest loss first)",
        )
        pictures.append(mistakes_png)
        print(f"most confident mistakes: {mistakes_png}")
    logging.info(
        "wrote %s.json, %s.txt, %s_predictions.csv and %s",
        prefix,
        prefix,
        prefix,
        " and ".join(pictures),
    )
    return 0


def run() -> None:
    settings.run(EvaluateConfig, main, __name__)


if __name__ == "__main__":
    run()
