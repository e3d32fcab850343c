#!/bin/sh
# Backend container entrypoint: makes demo certificates in /certs on first
# start (a shared volume the orchestrator reads ca.crt from), then runs the
# backend. Extra arguments go to sidetrace-backend.
set -eu
certs=${SIDETRACE_CERT_DIR:-/certs}
if [ ! -s "$certs/server.crt" ]; then
  /opt/sidetrace/bin/make-demo-certs "$certs" "DNS:backend,DNS:localhost,IP:127.0.0.1"
  echo "backend-entrypoint: made demo certificates in $certs" >&2
fi
exec /opt/sidetrace/bin/sidetrace-backend \
  --ingest 0.0.0.0:6443 --http 0.0.0.0:8080 \
  --cert "$certs/server.crt" --key "$certs/server.key" \
  --db /var/lib/sidetrace/db/sidetrace.db "$@"
