#!/usr/bin/env bash
# The commissioning page's cost: a gateway polling 50 simulated SDM630
# meters (63 points each) every second into a local Mosquitto, its CPU with
# the page closed and open in headless Chromium, three alternating rounds in
# one run; the page's first render with those 3,150 points and its weight
# (HTML, JS, CSS and icon, uncompressed).
# usage: scripts/bench/console.sh          (WINDOW=20s per state by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench BenchmarkConsole -benchtime 1x ./cmd/edgegw/ -args -bench.console="${WINDOW:-20s}" |
  awk '/^Benchmark/ { for (i = 5; i < NF; i += 2) printf "  %-18s %s\n", $(i+1), $i }'
