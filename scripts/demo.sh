#!/usr/bin/env bash
# make demo: the gateway's whole job on this machine. A local broker cluster
# (two bridged Mosquitto brokers behind haproxy), a simulated Modbus TCP
# device, and edgegw with examples/sensors.toml; the readings are shown as
# they arrive until Ctrl-C, then everything started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh demo
mkdir -p .demo bin
go build -o bin/edgegw ./cmd/edgegw
config=examples/sensors.toml
bin/edgegw check -config "$config"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  scripts/cluster.sh stop .demo/cluster
  echo "demo: stopped; the gateway's log is in .demo/edgegw.log"
}
trap cleanup EXIT INT TERM

scripts/cluster.sh start .demo/cluster 2 18830
bin/edgegw simulate -config "$config" > .demo/simulator.log 2>&1 &
pids+=($!)
bin/edgegw run -config "$config" > .demo/edgegw.log 2>&1 &
pids+=($!)
echo "demo: gateway running (log: .demo/edgegw.log); its live page: http://127.0.0.1:9130/ ; readings through the haproxy front, Ctrl-C to stop:"
if [ -n "${DEMO_SECONDS:-}" ]; then
  # For scripted runs: stop after DEMO_SECONDS.
  timeout "$DEMO_SECONDS" mosquitto_sub -h 127.0.0.1 -p 18830 -t 'edgegw/#' -v || true
else
  mosquitto_sub -h 127.0.0.1 -p 18830 -t 'edgegw/#' -v
fi
