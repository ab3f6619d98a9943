r"""Prints what `make demo` reached: val accuracy, where the curves are, and each prediction.

python scripts/demo_report.py --model_dir=build/model --predictions=build/demo/predictions.csv
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

from core import settings
from trainer.inference import decision

setting = settings.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportConfig:
    model_dir: str = setting(help="The model directory train wrote.")
    predictions: str = setting(help="predict's CSV for images named like cat.12.jpg.")

    def __post_init__(self):
        settings.check(self)


def main(config: ReportConfig) -> int:
    with open(os.path.join(config.model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    train_settings = metrics["settings"]
    features = metrics.get("feature_cache")
    # With --input_mode=features the epochs' rate counts feature vectors: the base's one
    # pass over the images is the figure that means images/s.
    speed = (
        f"base run once over the images at {features['images_per_sec']:.0f} images/s "
        f"({features['seconds']:.0f} s), then the head"
        if features
        else f"{metrics['train_images_per_sec']:.0f} train images/s"
    )
    print(
        f"\n{train_settings['backbone']} after {metrics['epochs_completed']} epochs "
        f"({speed}): val accuracy "
        f"{metrics['final_val_accuracy']:.3f} (best {metrics['best_val_accuracy']:.3f} at epoch "
        f"{metrics['best_val_accuracy_epoch']}; chance is 0.5)"
    )
    print(f"curves: {os.path.join(config.model_dir, 'training_curves.png')}")
    print(f"\n{'image':<16}{'true':<6}{'P(dog)':>7}  predicted")
    correct = total = 0
    with open(config.predictions) as f:
        for row in csv.DictReader(f):
            truth = row["id"].split(".")[0]
            prob_dog = float(row["label"])
            predicted = decision.class_name(prob_dog)
            correct += predicted == truth
            total += 1
            mark = "ok" if predicted == truth else "WRONG"
            print(f"{row['id'] + '.jpg':<16}{truth:<6}{prob_dog:>7.3f}  {predicted} {mark}")
    print(f"{correct} of {total} right")
    return 0


if __name__ == "__main__":
    settings.run(ReportConfig, main, __name__)
