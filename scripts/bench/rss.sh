#!/usr/bin/env bash
# RSS of the gateway with 50 Modbus devices (5 buses x 10 devices x 20
# float32 points, served by `edgegw simulate`) publishing to a local
# Mosquitto: idle (each device polled every 60 s) and busy (every second,
# 50 readings/s), after SECONDS_RUN seconds; on amd64 natively and on arm
# (GOARM=6) under qemu-arm-static, whose RSS includes the emulator's own.
# Also: time from start to READY=1 on the notify socket.
set -euo pipefail
cd "$(dirname "$0")/../.."
run_for=${SECONDS_RUN:-20}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/edgegw-amd64" ./cmd/edgegw
CGO_ENABLED=0 GOARCH=arm GOARM=6 go build -trimpath -ldflags '-s -w' -o "$work/edgegw-arm" ./cmd/edgegw
bport=18940; mport=18941
mosquitto -p "$bport" > "$work/mosquitto.log" 2>&1 & pids+=($!)

config() { # interval data_dir
  cat <<CFG
[gateway]
id = "rss"
data_dir = "$2"
[mqtt]
brokers = ["tcp://127.0.0.1:$bport"]
[status]
listen = ""
CFG
  for b in 1 2 3 4 5; do
    printf '[[bus]]\nname = "bus%d"\nprotocol = "modbus-tcp"\naddress = "127.0.0.1:%d"\n' "$b" "$mport"
  done
  for d in $(seq 1 50); do
    printf '[[device]]\nname = "dev%d"\nbus = "bus%d"\nunit_id = %d\ninterval = "%s"\n' "$d" $(( (d - 1) / 10 + 1 )) "$d" "$1"
    for p in $(seq 0 19); do
      printf '  [[device.point]]\n  name = "p%d"\n  table = "input"\n  address = %d\n  type = "float32"\n' "$p" $((p * 2))
    done
  done
}
config 1s "$work/sim" > "$work/sim.toml"
"$work/edgegw-amd64" simulate -config "$work/sim.toml" -listen "127.0.0.1:$mport" > "$work/sim.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$mport) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$bport) 2>/dev/null && break; sleep 0.05; done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

measure() { # label interval binary [emulator]
  local label=$1 interval=$2 bin=$3 emu=${4:-}
  rm -rf "$work/data"
  config "$interval" "$work/data" > "$work/gw.toml"
  $emu "$bin" run -config "$work/gw.toml" > "$work/gw.log" 2>&1 & local gw=$!
  sleep "$run_for"   # the measurement window
  local kib; kib=$(rss_kib "$gw")
  kill "$gw"; wait "$gw" 2>/dev/null || true
  awk -v l="$label" -v k="$kib" 'BEGIN { printf "%-32s RSS %6d KiB (%.1f MiB)\n", l, k, k / 1024 }'
}
measure "amd64, idle (60s interval)" 60s "$work/edgegw-amd64"
measure "amd64, busy (1s interval)" 1s "$work/edgegw-amd64"
measure "arm under qemu, idle" 60s "$work/edgegw-arm" qemu-arm-static
measure "arm under qemu, busy" 1s "$work/edgegw-arm" qemu-arm-static

# Start to READY=1: the time systemd waits before it considers the unit
# started. READY=1 is sent just before the "started" line is logged; its
# time stamp (ms) against the clock read just before the start.
ready() { # fresh|restart binary [emulator]
  local mode=$1 bin=$2 emu=${3:-} times=()
  for _ in 1 2 3 4 5; do
    [ "$mode" = fresh ] && rm -rf "$work/data"
    config 60s "$work/data" > "$work/gw.toml"
    : > "$work/gw.log"
    local t0; t0=$(date +%s%3N)
    $emu "$bin" run -config "$work/gw.toml" > "$work/gw.log" 2>&1 & local gw=$!
    for _ in $(seq 2000); do grep -q 'msg=started' "$work/gw.log" && break; sleep 0.005; done
    local ts; ts=$(grep -o 'time=[^ ]* level=INFO msg=started' "$work/gw.log" | cut -d' ' -f1 | cut -d= -f2)
    times+=($(( $(date -d "$ts" +%s%3N) - t0 )))
    kill "$gw"; wait "$gw" 2>/dev/null || true
  done
  local sorted=($(printf '%s\n' "${times[@]}" | sort -n))
  echo "${sorted[2]} ms median (min ${sorted[0]}, max ${sorted[4]})"
}
# A first start allocates the 4 MiB write-ahead log; later starts find it.
echo "start to READY=1, amd64, first start:      $(ready fresh "$work/edgegw-amd64")"
echo "start to READY=1, amd64, restart:          $(ready restart "$work/edgegw-amd64")"
echo "start to READY=1, arm under qemu, restart: $(ready restart "$work/edgegw-arm" qemu-arm-static)"
