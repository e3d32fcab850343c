#!/usr/bin/env bash
# Orchestrator end-to-end benchmark: sidetrace-loadgen (N agents, a total
# rate) -> sidetrace-orchestrator (default batch settings, spool on disk) ->
# sidetrace-bench-sink (HTTPS, dedupes, measures latency from alert creation).
# Everything on 127.0.0.1. Prints one summary line.
#
# usage: bench/orchestrator/run.sh [AGENTS=1000] [RATE=10000] [SECONDS=20] [LOADGEN_THREADS=1]
#   BUILD=build (env) the CMake build folder
set -euo pipefail
agents=${1:-1000}
rate=${2:-10000}
seconds=${3:-20}
lg_threads=${4:-1}
build=$(realpath "${BUILD:-build}")
tmp=$(mktemp -d /tmp/sidetrace-orch-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; cp "$tmp/orch.log" /tmp/sidetrace-orch-bench-last.log 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 8192

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$tmp/s.key" -out "$tmp/s.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$tmp/ext"
openssl x509 -req -in "$tmp/s.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 2 \
  -extfile "$tmp/ext" -out "$tmp/s.pem" 2>/dev/null

"$build/bench/orchestrator/sidetrace-bench-sink" 0 "$tmp/s.pem" "$tmp/s.key" >"$tmp/sink.out" 2>&1 &
pids+=($!); disown
for _ in $(seq 100); do grep -q listening "$tmp/sink.out" && break; sleep 0.1; done
sink_port=$(awk '/listening/{print $2}' "$tmp/sink.out")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
orch_port=$(free_port); http_port=$(free_port)
"$build/orchestrator/sidetrace-orchestrator" --listen "127.0.0.1:$orch_port" --http "127.0.0.1:$http_port" \
  --backend "127.0.0.1:$sink_port" --ca-file "$tmp/ca.pem" --access-key bench-key \
  --spool-dir "$tmp/spool" --log-level "${ORCH_LOG_LEVEL:-warn}" 2>"$tmp/orch.log" &
orch=$!
pids+=($orch); disown
for _ in $(seq 100); do curl -s --max-time 1 "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

ticks() { awk '{print $14+$15}' "/proc/$orch/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); start=$(date +%s.%N)
"$build/bench/orchestrator/sidetrace-loadgen" --orchestrator "127.0.0.1:$orch_port" --access-key bench-key \
  --agents "$agents" --rate "$rate" --duration "$seconds" --threads "$lg_threads" >"$tmp/loadgen.json" || true
cat "$tmp/loadgen.json" >&2
sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$tmp/loadgen.json")
for _ in $(seq 600); do
  unique=$(curl -s --cacert "$tmp/ca.pem" "https://127.0.0.1:$sink_port/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unique"])')
  [[ $unique -ge $sent ]] && break
  sleep 0.1
done
end=$(date +%s.%N); t1=$(ticks)
rss_peak_kb=$(awk '/VmHWM/{print $2}' "/proc/$orch/status")
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$orch/status")
stats=$(curl -s --cacert "$tmp/ca.pem" "https://127.0.0.1:$sink_port/stats")
metrics=$(curl -s "http://127.0.0.1:$http_port/metrics")
python3 - "$tmp/loadgen.json" "$stats" "$t0" "$t1" "$hz" "$start" "$end" "$rss_peak_kb" "$rss_kb" "$metrics" <<'PY'
import json, sys
lg = json.load(open(sys.argv[1])); st = json.loads(sys.argv[2])
t0, t1, hz = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
wall = float(sys.argv[7]) - float(sys.argv[6])
span = (st["last_ns"] - st["first_ns"]) / 1e9 or 1
m = {l.split()[0]: l.split()[1] for l in sys.argv[10].splitlines() if l and not l.startswith("#") and "{" not in l}
print(f"agents={lg['agents']} welcomed={lg['welcomed']} target_rate={lg['target_rate']:.0f}/s sent={lg['sent']} "
      f"acked={lg['acked']} stored_unique={st['unique']} lost={lg['sent'] - st['unique']} "
      f"duplicates_received={st['received'] - st['unique']} "
      f"end_to_end_rate={st['unique'] / span:.0f}/s latency_p50={st['p50_ms']:.1f}ms p99={st['p99_ms']:.1f}ms "
      f"max={st['max_ms']:.1f}ms orch_cpu={100 * (t1 - t0) / hz / wall:.0f}% orch_rss_peak={int(sys.argv[8]) // 1024}MB "
      f"orch_rss_end={int(sys.argv[9]) // 1024}MB batches={m.get('sidetrace_orchestrator_batches_sent_total')} "
      f"spool_dropped={m.get('sidetrace_orchestrator_spool_dropped_alerts_total')}")
PY
