#!/usr/bin/env bash
# Time from `edgegw run` starting to the first reading arriving at a local
# Mosquitto broker (simulated Modbus TCP device, default 5s interval: the
# first poll is immediate). Runs ROUNDS times, prints each and the median.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-5}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/edgegw" ./cmd/edgegw
bport=18930; mport=18931
mosquitto -p "$bport" > "$work/mosquitto.log" 2>&1 & pids+=($!)
cat > "$work/sensors.toml" <<CFG
[gateway]
id = "bench"
data_dir = "$work/data"
[mqtt]
brokers = ["tcp://127.0.0.1:$bport"]
[status]
listen = ""
[[bus]]
name = "lan"
protocol = "modbus-tcp"
address = "127.0.0.1:$mport"
[[device]]
name = "meter1"
bus = "lan"
  [[device.point]]
  name = "voltage"
  table = "input"
  type = "float32"
CFG
"$work/edgegw" simulate -config "$work/sensors.toml" > "$work/sim.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$mport) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$bport) 2>/dev/null && break; sleep 0.05; done
times=()
for r in $(seq "$rounds"); do
  rm -rf "$work/data"
  mosquitto_sub -p "$bport" -t 'edgegw/bench/meter1' -C 1 > /dev/null & sub=$!
  sleep 0.2   # let the subscription settle before the clock starts
  t0=$(date +%s%N)
  "$work/edgegw" run -config "$work/sensors.toml" > "$work/gw.log" 2>&1 & gw=$!
  wait "$sub"
  t1=$(date +%s%N)
  kill "$gw"; wait "$gw" || true
  ms=$(( (t1 - t0) / 1000000 ))
  times+=("$ms")
  echo "round $r: ${ms} ms"
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "start to first published reading: median ${sorted[$((rounds / 2))]} ms over $rounds runs (min ${sorted[0]}, max ${sorted[$((rounds - 1))]})"
