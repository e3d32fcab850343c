#!/bin/sh
# runtime-packages.sh BINARY: prints the Debian packages that hold the shared
# libraries BINARY links against (nothing for a static binary), so a runtime
# image installs exactly those instead of a hand-kept list.
set -eu
ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  # Bookworm's merged /usr: dpkg may record the file under /lib or /usr/lib.
  real=$(realpath "$lib")
  for p in "$lib" "$real" "${real#/usr}"; do
    if pkg=$(dpkg -S "$p" 2>/dev/null); then echo "${pkg%%:*}"; break; fi
  done
done | sort -u
