#!/usr/bin/env bash
# Resident memory before, during and after a broker outage: 10 simulated
# SDM630 meters polled every 100 ms (100 readings a second) into a local
# Mosquitto; the broker is stopped for OUTAGE (a backlog of 6,000 readings
# at the default 60s), started again, and the backlog drains. Prints VmRSS,
# RssAnon and RssFile (from /proc/PID/status) at each step.
#
# usage: scripts/bench/drain-rss.sh        (OUTAGE=60s)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$work/edgegw" ./cmd/edgegw
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker=$(free_port); sim=$(free_port); status=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker" > "$work/mosquitto.conf"
{
  printf '[gateway]\nid = "rss"\ndata_dir = "%s/data"\n[mqtt]\nbrokers = ["tcp://127.0.0.1:%s"]\n' "$work" "$broker"
  printf '[status]\nlisten = "127.0.0.1:%s"\n[[bus]]\nname = "lan"\nprotocol = "modbus-tcp"\naddress = "127.0.0.1:%s"\n' "$status" "$sim"
  for i in $(seq 1 10); do
    printf '[[device]]\nname = "meter%d"\nbus = "lan"\nunit_id = %d\ninterval = "100ms"\nprofile = "eastron-sdm630"\n' "$i" "$i"
  done
} > "$work/g.toml"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & mq=$!
"$work/edgegw" simulate -config "$work/g.toml" -listen "127.0.0.1:$sim" >/dev/null 2>&1 & pids+=($!)
sleep 1
"$work/edgegw" run -config "$work/g.toml" >/dev/null 2>&1 & gw=$!; pids+=("$gw")
mem() { awk '/^(VmRSS|RssAnon|RssFile)/ {printf "%s %6d KiB  ", $1, $2}' "/proc/$gw/status"; echo; }
waiting() { curl -s "127.0.0.1:$status/metrics" | awk '/^edgegw_buffer_readings / {printf "%d", $2}'; }
sleep 15; echo "steady:          $(mem)"
kill "$mq"; wait "$mq" 2>/dev/null || true
sleep "${OUTAGE:-60s}"; echo "after the outage: $(mem) ($(waiting) readings waiting)"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 120); do [ "$(waiting)" -lt 100 ] && break; sleep 0.5; done
sleep 2; echo "drained:         $(mem)"
sleep 30; echo "30 s later:      $(mem)"
