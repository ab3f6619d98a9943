#!/usr/bin/env bash
# Converts the Kaggle sample twice (original bytes, and --max_short_side=160), verifies
# both, and measures what the smaller copy saves in disk and in JPEG decode time.
#
#   scripts/convert_sample.sh [DATA_DIR] [BUILD_DIR]
#
# Writes BUILD_DIR/records_full and BUILD_DIR/records160 (each built in a temporary
# directory and swapped in at the end, so readers never see a half-written one).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/dogs-vs-cats/train}"
BUILD="${2:-build}"
PY="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$BUILD"

convert() {  # name, extra flags...
  local name="$1"; shift
  rm -rf "$BUILD/$name.new"
  local start end
  start=$(date +%s.%N)
  "$PY" -m records.make_records --input="$DATA" --output_dir="$BUILD/$name.new" "$@"
  end=$(date +%s.%N)
  echo "$name: wall $(echo "$end - $start" | bc) s (whole command, incl. ~5 s TF import)," \
       "$(du -sb "$BUILD/$name.new" | cut -f1) bytes"
  "$PY" -m records.verify --records_dir="$BUILD/$name.new"
  rm -rf "$BUILD/$name.old"
  if [ -d "$BUILD/$name" ]; then mv "$BUILD/$name" "$BUILD/$name.old"; fi
  mv "$BUILD/$name.new" "$BUILD/$name"
  rm -rf "$BUILD/$name.old"
}

convert records_full
convert records160 --max_short_side=160

"$PY" - "$BUILD" <<'EOF'
"""Decode every stored image to full size, both variants, same process, two rounds."""
import json, os, sys, time
import tensorflow as tf
from records import schema

build = sys.argv[1]
variants = {name: os.path.join(build, name) for name in ("records_full", "records160")}
encoded = {}
for name, path in variants.items():
    files = schema.shard_paths(path, "train") + schema.shard_paths(path, "val")
    encoded[name] = [
        tf.train.Example.FromString(r).features.feature[schema.ENCODED].bytes_list.value[0]
        for r in tf.data.TFRecordDataset(files).as_numpy_iterator()
    ]
    manifest = json.load(open(os.path.join(path, "manifest.json")))
    print(f"{name}: {len(encoded[name])} images, {sum(map(len, encoded[name])) / 2**20:.1f} MiB of JPEG, "
          f"conversion {manifest['run']['seconds']} s = {manifest['run']['images_per_second']} images/s "
          f"with {manifest['run']['num_workers']} workers")

def eager(images):
    for x in images:
        tf.io.decode_jpeg(x, channels=3)

def mapped(images):
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda x: tf.shape(tf.io.decode_jpeg(x, channels=3)), num_parallel_calls=tf.data.AUTOTUNE)
    for _ in ds:
        pass

for label, fn in (("eager loop", eager), ("tf.data map, AUTOTUNE", mapped)):
    best = {}
    for _ in range(2):  # interleaved rounds: both variants see the same machine load
        for name, images in encoded.items():
            start = time.perf_counter()
            fn(images)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - start)
    n = len(encoded["records_full"])
    print(f"decode ({label}): full {n / best['records_full']:.0f} images/s, "
          f"160 {n / best['records160']:.0f} images/s, "
          f"speed-up x{best['records_full'] / best['records160']:.2f}")
EOF
