#!/bin/sh
# Orchestrator container entrypoint: waits (bounded) for the backend to have
# made the demo CA in the shared /certs volume, then runs the orchestrator.
# Extra arguments go to sidetrace-orchestrator.
set -eu
ca=${SIDETRACE_CA_FILE:-/certs/ca.crt}
i=0
while [ ! -s "$ca" ]; do
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then echo "orchestrator-entrypoint: no $ca after 60 s" >&2; exit 1; fi
  sleep 0.1
done
exec /opt/sidetrace/bin/sidetrace-orchestrator \
  --listen 0.0.0.0:6667 --backend "${SIDETRACE_BACKEND:-backend:6443}" \
  --ca-file "$ca" --rules /opt/sidetrace/policies \
  --spool-dir /var/lib/sidetrace/spool --http 0.0.0.0:8667 "$@"
