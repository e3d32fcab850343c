#!/bin/sh
# make-certs.sh DIR SUBJECT_ALT_NAMES
# Makes a throwaway CA and a server certificate signed by it for the demos:
#   DIR/ca.crt       the CA the orchestrator trusts (--ca-file)
#   DIR/server.crt   the backend's certificate, SANs as given, e.g.
#   DIR/server.key     "DNS:backend,DNS:localhost,IP:127.0.0.1"
# The CA key is deleted: nothing else is ever signed with it. POSIX sh, so the
# backend image runs it too (docker/backend-entrypoint.sh).
set -eu
dir=$1
san=$2
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=sidetrace demo CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=sidetrace-backend" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f ca.key ca.srl server.csr server.ext
chmod 644 ca.crt server.crt
