#!/usr/bin/env bash
# edgegw's Modbus server beside mbusd 0.5.2 (a dedicated Modbus TCP-to-RTU
# gateway) on the same RTU line: a pty pair paced at the baud rate, edgegw's
# simulator answering at the far end; one after the other in one run.
#
#   pass-through: 10 registers read back to back, edgegw's polling idle, no cache
#   cached:       the same read of registers edgegw polls every 200 ms, cache = "1s"
#   sharing:      9,600 baud, edgegw polling every 500 ms, one master reading
#                 as fast as it can: polls kept, worst poll gap, line busy
#
# mbusd is built once into a cache from ../shared/peers/mbusd (MBUSD_SRC),
# or taken from MBUSD; without either its figures are left out.
# usage: scripts/bench/modbus-server.sh            (DURATION=10s by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${XDG_CACHE_HOME:-$HOME/.cache}/edgegw-bench
src=${MBUSD_SRC:-../shared/peers/mbusd}
if [ -z "${MBUSD:-}" ]; then
  if [ ! -x "$cache/mbusd" ] && [ -x "$src/build.sh" ]; then
    echo "== building mbusd 0.5.2 into $cache (once)" >&2
    sh "$src/build.sh" "$cache"
  fi
  [ -x "$cache/mbusd" ] && MBUSD=$cache/mbusd
fi
export MBUSD=${MBUSD:-}
[ -n "$MBUSD" ] || echo "== no mbusd (set MBUSD or MBUSD_SRC): edgegw's figures only" >&2
go test -run '^$' -bench 'BenchmarkModbusServer' -benchtime 1x ./gateway/ -args -bench.duration="${DURATION:-10s}" |
  awk '/^Benchmark/ { print $1; for (i = 5; i < NF; i += 2) printf "  %-22s %s\n", $(i+1), $i }'
