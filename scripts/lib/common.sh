# Shared shell helpers for sidetrace's scripts (sourced, not run).
# Everything here is bounded: no loop waits longer than the deadline it is
# given, so a demo or test that goes wrong fails instead of hanging.

# Root of the source tree (this file is scripts/lib/common.sh).
SIDETRACE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

_prog=$(basename "$0")
if [[ -t 1 ]]; then _b=$'\e[1m' _g=$'\e[32m' _r=$'\e[31m' _y=$'\e[33m' _n=$'\e[0m'; else _b= _g= _r= _y= _n=; fi

say()  { printf '%s==>%s %s\n' "$_b" "$_n" "$*"; }
ok()   { printf '%s  ✔%s %s\n' "$_g" "$_n" "$*"; }
warn() { printf '%s%s: %s%s\n' "$_y" "$_prog" "$*" "$_n" >&2; }
die()  { printf '%s%s: %s%s\n' "$_r" "$_prog" "$*" "$_n" >&2; exit 1; }

# require_root WHY: exits with a clear message unless running as root.
require_root() {
  [[ $(id -u) -eq 0 ]] && return 0
  die "needs root: $1. Run it as root (e.g. sudo $0 $*)."
}

# wait_until SECONDS CMD...: polls CMD every 0.1 s until it succeeds or the
# deadline passes; returns 1 on timeout.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  while ! "$@" >/dev/null 2>&1; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.1
  done
}

# now_ms: wall clock in milliseconds.
now_ms() { date +%s%3N; }

# find_binary BUILD_DIR NAME: path of the built executable NAME in the build
# tree (BUILD_DIR/bin, BUILD_DIR or one folder down); fails if there is none.
find_binary() {
  local dir=$1 name=$2 f
  for f in "$dir/bin/$name" "$dir/$name" "$dir"/*/"$name"; do
    [[ -x $f && -f $f ]] && { echo "$f"; return 0; }
  done
  return 1
}

# free_port: an unused TCP port on 127.0.0.1 (asks the kernel for one).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# listening ADDR:PORT: true when a TCP socket listens there (no connection is
# made, so the server logs nothing).
listening() {
  ss -Hltn "src ${1%:*} and sport = :${1##*:}" | grep -q .
}

# wait_service SECONDS PID WHAT CMD...: polls CMD until it succeeds; fails
# early when process PID has exited (its log says why), or at the deadline.
wait_service() {
  local deadline=$((SECONDS + $1)) pid=$2 what=$3
  shift 3
  while ! "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { warn "$what exited"; return 1; }
    ((SECONDS >= deadline)) && { warn "$what not ready within the deadline"; return 1; }
    sleep 0.1
  done
}

# require_agent_options AGENT OPTION...: the agent must list each OPTION in
# its --help. When it does not: under CTest (SIDETRACE_E2E=1) the scenario
# cannot run yet, which is reported as SKIPPED (exit 77, CTest's skip code)
# naming the options; run by hand it is an error.
require_agent_options() {
  local agent=$1 help missing=() o
  shift
  help=$("$agent" --help 2>&1 || true)
  for o in "$@"; do grep -q -- "$o\b" <<<"$help" || missing+=("$o"); done
  ((${#missing[@]} == 0)) && return 0
  if [[ ${SIDETRACE_E2E:-0} == 1 ]]; then
    echo "$_prog: SKIPPED: $agent has no ${missing[*]} option(s) yet (see its --help)"
    exit 77
  fi
  die "$agent has no ${missing[*]} option(s); see its --help"
}
