"""evaluate --engine=litert against --engine=keras on real records: max |dP(dog)|.

    .venv/bin/python scripts/engine_parity.py --model=<model.keras> --records_dir=<records>

The issue's bar: at most 1e-4 on the sample's val photos for EfficientNet-Lite0 at 224 px
(docs/limits.md has the figure). Exits 1 when a gap is over --max_gap.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from trainer.inference import evaluation

flags.DEFINE_string("model", None, "A .keras model saved by train.")
flags.DEFINE_string("records_dir", None, "Records made by make_records.")
flags.DEFINE_string("split", "val", "Which split.")
flags.DEFINE_float("max_gap", 1e-4, "The largest |dP(dog)| allowed.")
flags.mark_flags_as_required(["model", "records_dir"])
FLAGS = flags.FLAGS


def main(argv) -> int:
    del argv
    results = {
        engine: evaluation.evaluate(
            FLAGS.model, FLAGS.records_dir, FLAGS.split, num_mistakes=0, engine=engine
        )
        for engine in ("keras", "litert")
    }
    keras_result, lite_result = results["keras"], results["litert"]
    if lite_result.filenames != keras_result.filenames:
        raise SystemExit("the engines saw the records in different orders")
    gaps = np.abs(lite_result.prob_dog - keras_result.prob_dog)
    worst = int(np.argmax(gaps))
    print(
        f"{FLAGS.split}: {len(gaps)} photos, max |dP(dog)| {gaps[worst]:.2e} "
        f"({keras_result.filenames[worst]}), median {np.median(gaps):.2e}; accuracy keras "
        f"{keras_result.metrics['accuracy']:.4f}, litert {lite_result.metrics['accuracy']:.4f}"
    )
    return 0 if gaps[worst] <= FLAGS.max_gap else 1


if __name__ == "__main__":
    app.run(main)
