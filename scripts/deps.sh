#!/usr/bin/env bash
# Installs the Debian packages a task needs, only those missing.
# usage: scripts/deps.sh test|demo
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail

case "${1:-}" in
  test) pkgs=(mosquitto mosquitto-clients socat haproxy qemu-user-static e2fsprogs lintian man-db groff-base zstd gzip python3-zstandard python3-paho-mqtt rabbitmq-server mbpoll python3-pymodbus chromium) ;;
  demo) pkgs=(mosquitto mosquitto-clients haproxy) ;;
  *) echo "usage: $0 test|demo" >&2; exit 2 ;;
esac

# The Sparkplug tests judge edgegw's bytes with Eclipse Tahu's JavaScript
# codec (internal/tahu), run by node: Debian's nodejs when none is installed.
if [ "$1" = test ] && ! command -v node >/dev/null; then pkgs+=(nodejs npm); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  [ "$1" = test ] && exec "$(dirname "$0")/tahu.sh"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "edgegw: missing Debian packages: ${missing[*]}" >&2
  echo "install them with:  sudo apt-get update && sudo $cmd" >&2
  exit 1
fi
echo "edgegw: installing ${missing[*]} with apt-get (a minute or more on a fresh machine; its progress follows)" >&2
export DEBIAN_FRONTEND=noninteractive
# apt's own lines, the ones that show it moving: what it fetches and sets up.
progress() { grep --line-buffered -E '^(Get:|Fetched|Setting up|E:|W:)' | sed -u 's/^/  apt: /' >&2 || true; }
apt-get update 2>&1 | progress
$cmd 2>&1 | progress
missing_after=()
for p in "${missing[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_after+=("$p")
done
if [ ${#missing_after[@]} -gt 0 ]; then
  echo "edgegw: apt-get did not install ${missing_after[*]}; run: apt-get update && $cmd" >&2
  exit 1
fi
echo "edgegw: installed ${missing[*]}" >&2
# The Debian packages start a system-wide broker on port 1883; the tests and
# the demo run their own brokers and need nothing of it.
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
if [ "$1" = test ]; then exec "$(dirname "$0")/tahu.sh"; fi
