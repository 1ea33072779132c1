#!/usr/bin/env bash
# The fleet simulator (gateway/uplink/fleet_test.go): N uplinks in one
# process, wired as the gateway wires them, against three real Mosquitto
# brokers (and, with HAPROXY=1, an haproxy front over them). Kills the
# busiest broker, restarts it, and reports the distribution, connects per
# second at the survivors, time to reconnect, fail-back, memory and losses.
#
# usage: scripts/bench/fleet.sh [N ...]          (default: 1000 5000)
#        ORDERS="spread ordered" HAPROXY=0|1 FAILBACK=10s WINDOW=8s PROTOCOL=auto|5|3.1.1 scripts/bench/fleet.sh 1000
#        (WINDOW=-1ns: no first-reconnect window, as before the cluster issue)
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=${*:-1000 5000}
orders=${ORDERS:-spread ordered}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go test -c -o "$work/uplink.test" ./gateway/uplink
for n in $sizes; do
  for order in $orders; do
    echo "== N=$n broker_order=$order haproxy=${HAPROXY:-0} protocol=${PROTOCOL:-auto}"
    (cd "$work" && ./uplink.test -test.run '^TestFleet$' -test.v -test.timeout 30m \
      -fleet.n "$n" -fleet.order "$order" -fleet.failback "${FAILBACK:-10s}" -fleet.window "${WINDOW:-0}" -fleet.protocol "${PROTOCOL:-auto}" \
      -fleet.haproxy="$([ "${HAPROXY:-0}" = 1 ] && echo true || echo false)") \
      | sed -n 's/^ *fleet_test.go:[0-9]*: /  /p; /^--- /p'
  done
done
