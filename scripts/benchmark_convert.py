"""make_records' speed, this checkout against another (e.g. the commit before a change).

Each conversion runs as its own ``python -m records.make_records`` process from the tree
being measured, alternating between the trees (so load that drifts during the run hits
both alike), at full size and at a short side of 160 px. The figure is the manifest's own
``run.images_per_second`` (images written or skipped / wall seconds of the conversion,
planning included), reported per tree and setting with the median of ``--repeats`` runs
and the load average before each run.

    git worktree add /tmp/before <commit>
    .venv/bin/python scripts/benchmark_convert.py --baseline_tree=/tmp/before \\
        --input=../shared/data/dogs-vs-cats/train --output=build/benchmark_convert.json
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("baseline_tree", None, "A checkout of the code to compare with.")
flags.DEFINE_string("input", "../shared/data/dogs-vs-cats/train", "Images to convert.")
flags.DEFINE_integer("repeats", 2, "Conversions per tree and setting.")
flags.DEFINE_string("output", "build/benchmark_convert.json", "Where the figures go.")
flags.mark_flag_as_required("baseline_tree")
FLAGS = flags.FLAGS

SETTINGS = {"full size": [], "160 px": ["--max_short_side=160"]}


def _convert(tree: str, extra: list[str], input_path: str) -> dict:
    output_dir = tempfile.mkdtemp(prefix="benchmark_convert-")
    try:
        load = os.getloadavg()[0]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "records.make_records",
                f"--input={os.path.abspath(input_path)}",
                f"--output_dir={output_dir}",
                "--overwrite",
                *extra,
            ],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "2"},
            check=True,
            capture_output=True,
        )
        with open(os.path.join(output_dir, "manifest.json")) as f:
            run = json.load(f)["run"]
        return {"images_per_second": run["images_per_second"], "load_before": round(load, 2)}
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def main(argv):
    del argv
    trees = {"baseline": os.path.abspath(FLAGS.baseline_tree), "this": os.getcwd()}
    runs = {(tree, setting): [] for tree in trees for setting in SETTINGS}
    for _ in range(FLAGS.repeats):
        for setting, extra in SETTINGS.items():
            for tree, path in trees.items():
                runs[tree, setting].append(_convert(path, extra, FLAGS.input))
                print(tree, setting, runs[tree, setting][-1], flush=True)
    report = {
        f"{tree}, {setting}": {
            "median_images_per_second": statistics.median(r["images_per_second"] for r in rs),
            "runs": rs,
        }
        for (tree, setting), rs in runs.items()
    }
    for setting in SETTINGS:
        ratio = (
            report[f"this, {setting}"]["median_images_per_second"]
            / report[f"baseline, {setting}"]["median_images_per_second"]
        )
        report[f"ratio this/baseline, {setting}"] = round(ratio, 3)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
