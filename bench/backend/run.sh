#!/usr/bin/env bash
# Runs the backend ingest benchmark matrix (one keep-alive TLS connection,
# batches of 1,000 realistic alerts) and prints one table row per variant:
# alert ids v7 (time-ordered, as sidetrace-agent makes them) / v4 (random, as
# Falco makes them) x sync full/normal x serial (W=1) / pipelined (W=4).
#   BUILD=build bench/backend/run.sh [BATCHES]
# A last row sends the same alerts from 1,000 containers (and tasks), as an
# orchestrator's fleet does: the container and task indexes' worst case.
# Configures BUILD if needed and builds what it needs; then unattended,
# ~3-4 minutes on an idle machine.
set -euo pipefail
BUILD=${BUILD:-build}
BATCHES=${1:-200}
cd "$(dirname "$0")/../.."
[[ -f $BUILD/build.ninja ]] || cmake -S . -B "$BUILD" -G Ninja >/dev/null
ninja -C "$BUILD" sidetrace-backend backend_ingest_bench >/dev/null
echo "| ids | sync | pipeline | events/s | batch p50 | batch p99 | backend CPU / batch (committer) | load avg before |"
echo "|---|---|---|---|---|---|---|---|"
for uuid in v7 v4; do
  for sync in full normal; do
    for w in 1 4; do
      SIDETRACE_BUILD_DIR="$BUILD" "$BUILD"/bench/backend/backend_ingest_bench \
        --batches "$BATCHES" --pipeline "$w" --sync "$sync" --uuid "$uuid" 2>/dev/null | grep '^| '
    done
  done
done
SIDETRACE_BUILD_DIR="$BUILD" "$BUILD"/bench/backend/backend_ingest_bench \
  --batches "$BATCHES" --pipeline 4 --sync full --uuid v7 --containers 1000 2>/dev/null | grep '^| ' 
