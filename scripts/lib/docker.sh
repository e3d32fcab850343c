# Docker engine helpers for scripts/docker-demo (sourced after common.sh).
#
# No image registry may be reachable (CI machines, air-gapped labs), but the
# Debian archive is: the base image is then made locally with debootstrap.
# Uses the legacy builder, which every docker client and docker-compose 1.29
# drive without the buildx plugin.

export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

# Addresses: documentation ranges only (never 192.0.2.0/24, nor a private
# range that could be mistaken for a real network), high in the range so as
# not to meet the low addresses tests like to give their namespaces. docker0
# gets one when we start the engine ourselves; the compose networks pin
# their own subnets.
SIDETRACE_DOCKER_BIP=${SIDETRACE_DOCKER_BIP:-198.51.100.193/27}
BASE_IMAGE=debian:bookworm-slim

DOCKERD_PID=
DOCKERD_LOG=
_saved_forward_policy=
_saved_ip_forward=

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

# ensure_docker_packages: installs docker.io/docker-compose/debootstrap when
# missing. Returns 1 if they are missing and cannot be installed.
ensure_docker_packages() {
  local missing=() p
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) -eq 0 ]] || { warn "missing ${missing[*]} and not root"; return 1; }
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# ensure_dockerd: uses a running engine, or starts dockerd in the background
# (log in a temp file) and waits up to 60 s for it. Sets DOCKERD_PID when it
# started one, so stop_dockerd can stop exactly that process.
ensure_dockerd() {
  docker_ok && return 0
  [[ $(id -u) -eq 0 ]] || { warn "no Docker engine running, and starting one needs root"; return 1; }
  command -v dockerd >/dev/null || return 1
  DOCKERD_LOG=$(mktemp /tmp/sidetrace-dockerd.XXXXXX.log)
  say "starting dockerd (log: $DOCKERD_LOG)"
  # dockerd turns on IP forwarding and sets the FORWARD policy to DROP for
  # the whole host; both are put back when the engine we started stops, so
  # that later tests on this machine see it as it was.
  _saved_ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || true)
  _saved_forward_policy=$(iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3; exit}' || true)
  # setsid: the engine must not get the demo's Ctrl-C; we stop it ourselves.
  setsid dockerd --bip "$SIDETRACE_DOCKER_BIP" >"$DOCKERD_LOG" 2>&1 </dev/null &
  DOCKERD_PID=$!
  if ! wait_until 60 docker_ok; then
    warn "dockerd did not come up within 60 s; last lines of $DOCKERD_LOG:"
    tail -n 15 "$DOCKERD_LOG" >&2
    stop_dockerd
    return 1
  fi
}

stop_dockerd() {
  [[ -n $DOCKERD_PID ]] || return 0
  say "stopping the dockerd this script started (pid $DOCKERD_PID)"
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$DOCKERD_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
  [[ -n $_saved_forward_policy ]] && iptables -P FORWARD "$_saved_forward_policy" 2>/dev/null
  [[ -n $_saved_ip_forward ]] && echo "$_saved_ip_forward" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
  return 0
}

# ensure_base_image: debian:bookworm-slim from the local store, a pull, or
# debootstrap (minbase) imported as that tag.
ensure_base_image() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  say "pulling $BASE_IMAGE"
  if timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  say "no registry reachable: building $BASE_IMAGE locally with debootstrap (about a minute)"
  command -v debootstrap >/dev/null || { warn "debootstrap is not installed"; return 1; }
  local root mirror
  root=$(mktemp -d /tmp/sidetrace-rootfs.XXXXXX)
  mirror=${SIDETRACE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  if ! timeout 900 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
    warn "debootstrap failed; last lines of $root.log:"
    tail -n 15 "$root.log" >&2
    rm -rf "$root"
    return 1
  fi
  # Make it what the official slim image is: apt sources for updates and
  # security; no package caches kept by apt (docker-clean); no docs, man
  # pages or translations, now or from later installs (dpkg path-exclude).
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Keep-Downloaded-Packages "false";
CLEAN
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
SLIM
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  local rc=$?
  rm -rf "$root" "$root.log"
  return $rc
}
