r"""Prints what `make demo` reached: test accuracy (the headline: no choice was made on the
test split) with its standard error, the val accuracy the epoch was chosen on, where the
curves are, and each sample prediction.

python scripts/demo_report.py --model_dir=build/demo --predictions=build/demo/predictions.csv
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
    tta: str = setting("none", "The evaluate --tta whose test figures to print.")

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
    shipped = metrics.get("model_epoch") or metrics["epochs_completed"]
    history = os.path.join(config.model_dir, "history.csv")
    with open(history) as f:
        val_by_epoch = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    print(
        f"\n{metrics['settings'].get('recipe', 'none')} recipe, {train_settings['backbone']}, "
        f"{metrics['epochs_completed']} epochs ({speed}); model.keras holds epoch {shipped}: "
        f"val accuracy {val_by_epoch[shipped - 1]:.3f} (best {metrics['best_val_accuracy']:.3f} "
        f"at epoch {metrics['best_val_accuracy_epoch']}; val chose it)"
    )
    name = "eval_test" + ("" if config.tta == "none" else f"_tta_{config.tta}")
    test_path = os.path.join(config.model_dir, f"{name}.json")
    if os.path.isfile(test_path):
        with open(test_path) as f:
            test = json.load(f)
        print(
            f"test accuracy {test['accuracy']:.4f} +- {test['accuracy_stderr']:.4f} (standard "
            f"error), log loss {test['log_loss']:.4f}, on {test['num_examples']} held-out photos "
            f"(tta={config.tta}; chance is 0.5)"
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
