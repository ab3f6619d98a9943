#!/usr/bin/env bash
# Launches 2 local training workers with TF_CONFIG (MultiWorkerMirroredStrategy) on
# 127.0.0.1, the way a cluster would run one process per machine. Worker 0 is the chief
# and writes MODEL_DIR; worker 1 writes only temporary files.
#
#   scripts/train_multiworker.sh build/records build/model_mw [extra train flags...]
#
# On real machines run one `train --strategy=multi_worker` per host with its own
# TF_CONFIG (same cluster list, its own task index) and the records at the same path.
set -euo pipefail
mkdir -p "$(dirname "${2:-.}")"
RECORDS=${1:?usage: $0 RECORDS_DIR MODEL_DIR [train flags...]}
MODEL_DIR=${2:?usage: $0 RECORDS_DIR MODEL_DIR [train flags...]}
shift 2
PORT0=${PORT0:-12345}
PORT1=${PORT1:-12346}
WORKERS="\"127.0.0.1:${PORT0}\", \"127.0.0.1:${PORT1}\""
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for index in 0 1; do
  TF_CONFIG="{\"cluster\": {\"worker\": [${WORKERS}]}, \"task\": {\"type\": \"worker\", \"index\": ${index}}}" \
    python -m trainer.train --strategy=multi_worker --records_dir="$RECORDS" \
      --model_dir="$MODEL_DIR" "$@" > "${MODEL_DIR%/}.worker${index}.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
pids=()
echo "workers finished with status $status; logs: ${MODEL_DIR%/}.worker{0,1}.log"
exit $status
