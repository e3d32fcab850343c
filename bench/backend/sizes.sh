#!/usr/bin/env bash
# Ingest cost by database size: grows one database per backend binary in
# STEPS runs of BATCHES batches of 1,000 alerts (pipeline 4, sync full, v7
# ids, alerts from CONTAINERS containers and tasks) and prints one table
# row per run. With several binaries, their runs alternate (same load).
#   BUILD=build [DIRS="build /path/with/backend/sidetrace-backend"] [CONTAINERS=1000] \
#     bench/backend/sizes.sh [STEPS=10] [BATCHES=200]
# A DIR is a build directory (or any directory holding
# backend/sidetrace-backend). Databases go to DB_DIR (default /tmp) and are
# removed at the end; 10 x 200 batches needs ~2.7 GB per binary.
set -euo pipefail
BUILD=${BUILD:-build}
DIRS=${DIRS:-$BUILD}
CONTAINERS=${CONTAINERS:-1000}
DB_DIR=${DB_DIR:-/tmp}
STEPS=${1:-10}
BATCHES=${2:-200}
cd "$(dirname "$0")/../.."
[[ -f $BUILD/build.ninja ]] || cmake -S . -B "$BUILD" -G Ninja >/dev/null
ninja -C "$BUILD" sidetrace-backend backend_ingest_bench >/dev/null
dbs=()
trap 'for d in "${dbs[@]}"; do rm -f "$d" "$d-wal" "$d-shm"; done' EXIT
i=0
for d in $DIRS; do
  dbs+=("$DB_DIR/sizes-$$-$i.db")
  i=$((i + 1))
done
echo "| backend | rows before | events/s | batch p99 | backend CPU / batch (committer) | load avg before |"
echo "|---|---:|---:|---:|---|---|"
for ((s = 0; s < STEPS; s++)); do
  i=0
  for d in $DIRS; do
    row=$(SIDETRACE_BUILD_DIR="$d" "$BUILD"/bench/backend/backend_ingest_bench --batches "$BATCHES" \
      --pipeline 4 --sync full --containers "$CONTAINERS" --db "${dbs[$i]}" 2>/dev/null | grep '^| ')
    # | ids | sync | W | ev/s | p50 | p99 | cpu | load |
    IFS='|' read -r _ _ _ _ evs _ p99 cpu load _ <<<"$row"
    echo "| $d |$((s * BATCHES * 1000)) |$evs|$p99|$cpu|$load|"
    i=$((i + 1))
  done
done
