#!/usr/bin/env bash
# Orchestrator end-to-end benchmark: sidetrace-loadgen (N agents, a total
# rate) -> sidetrace-orchestrator (default batch settings, spool on disk with
# fdatasync before each ack) -> sidetrace-backend (TLS, SQLite) — or, with
# SINK=1, sidetrace-bench-sink (TLS, dedupes, stores nothing: the
# orchestrator alone). Everything on 127.0.0.1. Latency is alert creation
# (loadgen) to the backend's ingest of its batch (events.received_ns; the
# commit follows within its group commit). Prints one summary line, then
# each process's CPU time per alert (user + system, microseconds): on 2
# vCPUs, 100,000 alerts/s end to end leaves 20 us per alert for all three;
# then the orchestrator's by thread (an orchestrator older than session 5
# does not name its threads: all of it shows as io).
#
# usage: bench/orchestrator/run.sh [AGENTS=1000] [RATE=10000] [SECONDS=20] [LOADGEN_THREADS=1]
#   env: SIDETRACE_BUILD_DIR (or BUILD)=build (the CMake build folder), SINK=1, ORCH_ARGS="extra orchestrator flags",
#        BURST=N: alerts per write per agent connection (default 16),
#        CONTAINERS=N: the agents run in N containers (default 0: each its own, as on ECS; 1 is the backend's best case),
#        PERF=FILE: perf record -g (cpu-clock) of the orchestrator while the loadgen runs, into FILE
set -euo pipefail
agents=${1:-1000}
rate=${2:-10000}
seconds=${3:-20}
lg_threads=${4:-1}
build=$(realpath "${SIDETRACE_BUILD_DIR:-${BUILD:-build}}")
tmp=$(mktemp -d /tmp/sidetrace-orch-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  cp "$tmp/orch.log" /tmp/sidetrace-orch-bench-last.log 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 8192
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Each thread's name and CPU ticks (the orchestrator names its threads).
thread_ticks() { for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done; }

if [[ ${SINK:-0} == 1 ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/s.key" -out "$tmp/s.pem" 2>/dev/null
  ca=$tmp/s.pem
  "$build/bench/orchestrator/sidetrace-bench-sink" 0 "$tmp/s.pem" "$tmp/s.key" >"$tmp/backend.log" 2>&1 &
  backend=$!
  for _ in $(seq 100); do grep -q listening "$tmp/backend.log" && break; sleep 0.1; done
  ingest_port=$(awk '/listening/{print $2}' "$tmp/backend.log")
else
  "$build/backend/sidetrace-backend" --self-signed --db "$tmp/bench.db" --access-key bench-key \
    --ingest 127.0.0.1:0 --http 127.0.0.1:0 --log-level info >"$tmp/backend.out" 2>"$tmp/backend.log" &
  backend=$!
  for _ in $(seq 100); do grep -q 'http listening' "$tmp/backend.log" && break; sleep 0.1; done
  ingest_port=$(grep -o 'ingest listening" addr=127.0.0.1:[0-9]*' "$tmp/backend.log" | sed 's/.*://')
  ca=$tmp/bench.db.cert.pem
fi
pids+=("$backend"); disown

orch_port=$(free_port); http_port=$(free_port)
# shellcheck disable=SC2086
"$build/orchestrator/sidetrace-orchestrator" --listen "127.0.0.1:$orch_port" --http "127.0.0.1:$http_port" \
  --backend "127.0.0.1:$ingest_port" --ca-file "$ca" --access-key bench-key \
  --spool-dir "$tmp/spool" --log-level "${ORCH_LOG_LEVEL:-warn}" ${ORCH_ARGS:-} 2>"$tmp/orch.log" &
orch=$!
pids+=("$orch"); disown
for _ in $(seq 100); do curl -s --max-time 1 "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

hz=$(getconf CLK_TCK)
o0=$(ticks "$orch"); b0=$(ticks "$backend"); start=$(date +%s.%N); thread_ticks "$orch" >"$tmp/threads0"
if [[ -n ${PERF:-} ]]; then
  perf record -e cpu-clock -g -p "$orch" -o "$PERF" -- sleep "$seconds" >/dev/null 2>&1 &
fi
"$build/bench/orchestrator/sidetrace-loadgen" --orchestrator "127.0.0.1:$orch_port" --access-key bench-key \
  --agents "$agents" --rate "$rate" --duration "$seconds" --threads "$lg_threads" --burst "${BURST:-16}" --containers "${CONTAINERS:-0}" \
  >"$tmp/loadgen.json" || true
cat "$tmp/loadgen.json" >&2
# Alerts the orchestrator acked must all arrive; unacked ones (the loadgen
# gave up waiting) may or may not, like a crashed agent's.
acked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$tmp/loadgen.json")
stored() {
  if [[ ${SINK:-0} == 1 ]]; then
    curl -s --cacert "$ca" "https://127.0.0.1:$ingest_port/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unique"])'
  else
    python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from events").fetchone()[0])' "$tmp/bench.db"
  fi
}
for _ in $(seq 600); do
  [[ $(stored) -ge $acked ]] && break
  sleep 0.1
done
end=$(date +%s.%N); o1=$(ticks "$orch"); b1=$(ticks "$backend"); thread_ticks "$orch" >"$tmp/threads1"
rss_peak_kb=$(awk '/VmHWM/{print $2}' "/proc/$orch/status")
# To a file: with thousands of agents (a drop counter each) it is too long for an argument.
curl -s "http://127.0.0.1:$http_port/metrics" >"$tmp/metrics.txt"
if [[ ${SINK:-0} == 1 ]]; then
  curl -s --cacert "$ca" "https://127.0.0.1:$ingest_port/stats" >"$tmp/stored.json"
else
  python3 - "$tmp/bench.db" >"$tmp/stored.json" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
lat = sorted(r[0] for r in db.execute("select received_ns - time_ns from events"))
rx = db.execute("select min(received_ns), max(received_ns), count(distinct uuid) from events").fetchone()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else 0
print(json.dumps({"unique": rx[2], "received": len(lat), "first_ns": rx[0] or 0, "last_ns": rx[1] or 0,
                  "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": lat[-1] / 1e6 if lat else 0}))
PY
fi
python3 - "$tmp/loadgen.json" "$tmp/stored.json" "$o0" "$o1" "$b0" "$b1" "$hz" "$start" "$end" "$rss_peak_kb" "$tmp/metrics.txt" \
  "$tmp/threads0" "$tmp/threads1" <<'PY'
import json, os, sys
lg = json.load(open(sys.argv[1])); st = json.load(open(sys.argv[2]))
o0, o1, b0, b1, hz = (int(x) for x in sys.argv[3:8])
wall = float(sys.argv[9]) - float(sys.argv[8])
span = (st["last_ns"] - st["first_ns"]) / 1e9 or 1
m = {l.split()[0]: l.split()[1] for l in open(sys.argv[11]) if l.strip() and not l.startswith("#") and "{" not in l}
print(f"agents={lg['agents']} welcomed={lg['welcomed']} target_rate={lg['target_rate']:.0f}/s sent={lg['sent']} "
      f"acked={lg['acked']} stored_unique={st['unique']} acked_but_lost={max(0, lg['acked'] - st['unique'])} "
      f"end_to_end_rate={st['unique'] / span:.0f}/s latency_p50={st['p50_ms']:.1f}ms p99={st['p99_ms']:.1f}ms "
      f"max={st['max_ms']:.1f}ms orch_cpu={100 * (o1 - o0) / hz / wall:.0f}% "
      f"backend_cpu={100 * (b1 - b0) / hz / wall:.0f}% loadgen_cpu={100 * lg.get('cpu_seconds', 0) / lg['seconds']:.0f}% "
      f"orch_rss_peak={int(sys.argv[10]) // 1024}MB batches={m.get('sidetrace_orchestrator_batches_sent_total')} "
      f"spool_dropped={m.get('sidetrace_orchestrator_spool_dropped_alerts_total')} "
      f"spool_syncs={m.get('sidetrace_orchestrator_spool_syncs_total')} "
      f"loadavg={os.getloadavg()[0]:.1f}")
# CPU per alert: each process's CPU time over the alerts it handled.
orch_us = 1e6 * (o1 - o0) / hz / max(1, lg["acked"])
back_us = 1e6 * (b1 - b0) / hz / max(1, st["unique"])
lg_us = 1e6 * lg.get("cpu_seconds", 0) / max(1, lg["sent"])
total = orch_us + back_us + lg_us
print(f"cpu_us_per_alert: loadgen={lg_us:.1f} orchestrator={orch_us:.1f} backend={back_us:.1f} total={total:.1f} "
      f"(2 vCPUs at 100,000/s allow 20.0; these costs allow {2e6 / total:,.0f}/s)")
# The orchestrator's share by thread: agent I/O (reads, conversion, acks),
# the spool writer (write + fdatasync), the forwarder (spool read, TLS, POST).
def thread_totals(path):
    group = {"st-spool": "spool_writer", "st-forward": "forwarder", "st-io": "io", "sidetrace-orche": "io"}
    out = {}
    for line in open(path):
        name, ticks = line.rsplit(None, 1)
        out[group.get(name, "other")] = out.get(group.get(name, "other"), 0) + int(ticks)
    return out
t0, t1 = thread_totals(sys.argv[12]), thread_totals(sys.argv[13])
print("orchestrator_threads_us_per_alert: " + " ".join(
    f"{k}={1e6 * (t1.get(k, 0) - t0.get(k, 0)) / hz / max(1, lg['acked']):.2f}"
    for k in ("io", "spool_writer", "forwarder", "other")))
PY
