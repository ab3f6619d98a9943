#!/usr/bin/env bash
# Input-throughput benchmark on the sample: this pipeline vs the Keras generators it replaces.
# Usage: scripts/benchmark_input.sh [extra benchmark flags, e.g. --max_images=1024 --repeats=5]
# Needs records made first (make records), and optionally --max_short_side=160 records at
# $SMALL_RECORDS for the pipeline160_* rows. Writes $OUT/benchmark.{json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS="${RECORDS:-build/records_full}"
SMALL_RECORDS="${SMALL_RECORDS:-build/records160}"
IMAGES="${IMAGES:-../shared/data/dogs-vs-cats/train}"
OUT="${OUT:-build/benchmark}"
PYTHON="${PYTHON:-.venv/bin/python}"

small_flag=()
if [[ -f "$SMALL_RECORDS/manifest.json" ]]; then
  small_flag=(--small_records_dir="$SMALL_RECORDS")
else
  echo "note: no $SMALL_RECORDS/manifest.json; skipping the --max_short_side rows" >&2
fi

exec "$PYTHON" -m benchmarks.benchmark_input \
  --records_dir="$RECORDS" "${small_flag[@]}" \
  --images_dir="$IMAGES" --output_dir="$OUT" \
  --batch_size=64 --image_size=128 --repeats=3 "$@"
