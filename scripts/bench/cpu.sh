#!/usr/bin/env bash
# CPU, wakeups and memory of edgegw beside Telegraf, polling the same
# simulated Eastron SDM630 meters (edgegw's built-in profile: 63 float32
# points) into the same local Mosquitto, QoS 1, JSON; the programs run one
# after the other at each load, for ROUNDS alternating rounds:
#
#   10 meters every 100 ms, 1 meter every 1 s, 50 meters every 1 s, and
#   idle (1 meter polled hourly).
#
# Reported per program and load: CPU per 1,000 points (and per second
# idle), wakeups per second (voluntary context switches of all threads,
# /proc/PID/task/*/status), RSS at the end; then each edgegw figure over
# Telegraf's best. Telegraf v1.37.2 is built once into a cache with the
# plugins it needs (the Go module proxy serves it).
#
# usage: scripts/bench/cpu.sh            (DURATION=20s ROUNDS=3 by default)
#        DURATION=10s ROUNDS=1 scripts/bench/cpu.sh
#        LOADS="1 1s;10 100ms" scripts/bench/cpu.sh   (only these loads: "METERS INTERVAL;...")
#        ARCH=arm scripts/bench/cpu.sh   (both built for GOARM=6, run under qemu-arm-static;
#                                         ratios reported, not judged)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${DURATION:-20s}
rounds=${ROUNDS:-3}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/edgegw-bench
telegraf=$cache/telegraf-v1.37.2/telegraf
if [ ! -x "$telegraf" ]; then
  echo "== building Telegraf v1.37.2 into $cache (once)" >&2
  GOBIN=$(dirname "$telegraf") go install -tags custom,inputs.modbus,outputs.mqtt,serializers.json \
    github.com/influxdata/telegraf/cmd/telegraf@v1.37.2
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
edgegw=$work/edgegw
if [ "${ARCH:-}" = arm ]; then
  # Both programs built for arm and run under the emulator, so that the
  # ratios compare like with like.
  if [ ! -x "$telegraf.arm" ]; then
    echo "== building Telegraf v1.37.2 for linux/arm GOARM=6 into $cache (once)" >&2
    src=$(go mod download -json github.com/influxdata/telegraf@v1.37.2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    (cd "$src" && CGO_ENABLED=0 GOARCH=arm GOARM=6 go build -tags custom,inputs.modbus,outputs.mqtt,serializers.json \
      -o "$telegraf.arm" ./cmd/telegraf)
  fi
  printf '#!/bin/sh\nexec qemu-arm-static %s "$@"\n' "$telegraf.arm" > "$work/telegraf"; chmod +x "$work/telegraf"
  telegraf=$work/telegraf
  CGO_ENABLED=0 GOARCH=arm GOARM=6 go build -o "$work/edgegw.arm" ./cmd/edgegw
  printf '#!/bin/sh\nexec qemu-arm-static %s "$@"\n' "$work/edgegw.arm" > "$edgegw"; chmod +x "$edgegw"
else
  CGO_ENABLED=0 go build -o "$edgegw" ./cmd/edgegw
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker=$(free_port); sim=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)

# edgegw's config of N meters polled every INTERVAL.
edgegw_config() { # N INTERVAL FILE
  {
    printf '[gateway]\nid = "cpu"\ndata_dir = "%s/data-%s"\n[mqtt]\nbrokers = ["tcp://127.0.0.1:%s"]\n' "$work" "$RANDOM" "$broker"
    printf '[status]\nlisten = ""\n[[bus]]\nname = "lan"\nprotocol = "modbus-tcp"\naddress = "127.0.0.1:%s"\n' "$sim"
    for i in $(seq 1 "$1"); do
      printf '[[device]]\nname = "meter%d"\nbus = "lan"\nunit_id = %d\ninterval = "%s"\nprofile = "eastron-sdm630"\n' "$i" "$i" "$2"
    done
  } > "$3"
}
# Telegraf's: the same meters, the profile's points in its contiguous blocks.
telegraf_config() { # N INTERVAL OPTIMIZATION FILE
  python3 - "$@" "$broker" "$sim" gateway/config/profiles/eastron-sdm630.toml <<'EOF'
import sys, tomllib
n, interval, optimization, out, broker, sim, profile = sys.argv[1:]
points = tomllib.load(open(profile, "rb"))["point"]
blocks, last = [], None
for p in sorted(points, key=lambda p: p["address"]):
    if last is None or p["address"] != last:
        blocks.append([])
    blocks[-1].append(p)
    last = p["address"] + 2
with open(out, "w") as f:
    f.write(f'[agent]\n  interval = "{interval}"\n  flush_interval = "{interval}"\n  omit_hostname = true\n  quiet = true\n')
    f.write(f'[[outputs.mqtt]]\n  servers = ["127.0.0.1:{broker}"]\n  topic = "telegraf/sdm630"\n  qos = 1\n  data_format = "json"\n')
    f.write(f'[[inputs.modbus]]\n  name = "sdm630"\n  controller = "tcp://127.0.0.1:{sim}"\n  configuration_type = "request"\n')
    if optimization != "none":
        f.write(f'  optimization = "{optimization}"\n')
    for unit in range(1, int(n) + 1):
        for block in blocks:
            f.write(f'  [[inputs.modbus.request]]\n    slave_id = {unit}\n    register = "input"\n    byte_order = "ABCD"\n    fields = [\n')
            for p in block:
                f.write(f'      {{ address = {p["address"]}, name = "{p["name"]}", type = "FLOAT32" }},\n')
            f.write('    ]\n')
print(len(blocks), file=sys.stderr)
EOF
}

edgegw_config 50 1s "$work/sim.toml"
"$edgegw" simulate -config "$work/sim.toml" -listen "127.0.0.1:$sim" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$sim") 2>/dev/null && break; sleep 0.1; done

# CPU time in ns, all threads (schedstat: exact, where /proc/PID/stat counts 10 ms ticks).
cputime() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%d", s}'; }
wakeups() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s+=$2} END {print s+0}'; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
secs() { python3 -c "import re,sys; v=sys.argv[1]; m=re.fullmatch(r'(\d+(?:\.\d+)?)(ms|s|m)', v); print(float(m[1])*{'ms':0.001,'s':1,'m':60}[m[2]])" "$1"; }
dur=$(secs "$duration")

# run NAME CMD...: start, let it settle, measure for $duration, stop.
# Prints: name cpu_µs wakeups rss_kib
run() {
  local name=$1; shift
  "$@" >/dev/null 2>&1 & local pid=$!
  sleep 3 # start-up is not what is measured
  local t0 w0; t0=$(cputime "$pid"); w0=$(wakeups "$pid")
  sleep "$dur"
  local t1 w1 r; t1=$(cputime "$pid"); w1=$(wakeups "$pid"); r=$(rss "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $(( (t1 - t0) / 1000 )) $(( w1 - w0 )) $r" # CPU in µs
}

IFS=';' read -r -a loads <<<"${LOADS:-10 100ms;1 1s;50 1s;1 1h}"
results=$work/results
for round in $(seq 1 "$rounds"); do
  for load in "${loads[@]}"; do
    read -r n iv <<<"$load"
    edgegw_config "$n" "$iv" "$work/edgegw.toml"
    telegraf_config "$n" "$iv" none "$work/telegraf-default.conf" 2>/dev/null
    telegraf_config "$n" "$iv" max_insert "$work/telegraf-max.conf" 2>/dev/null
    for prog in edgegw telegraf-default telegraf-max_insert; do
      case $prog in
        edgegw) line=$(run "$prog" "$edgegw" run -config "$work/edgegw.toml") ;;
        telegraf-default) line=$(run "$prog" "$telegraf" --config "$work/telegraf-default.conf") ;;
        telegraf-max_insert) line=$(run "$prog" "$telegraf" --config "$work/telegraf-max.conf") ;;
      esac
      echo "$round $n $iv $line" | tee -a "$results" >&2
    done
  done
done

python3 - "$results" "$dur" <<'EOF'
import sys, collections
rows = collections.defaultdict(list)
dur = float(sys.argv[2])
for line in open(sys.argv[1]):
    rnd, n, iv, prog, cpu, wake, rss = line.split()
    rows[(n, iv, prog)].append((int(cpu), int(wake), int(rss)))
def secs(iv):
    return float(iv[:-2]) / 1000 if iv.endswith("ms") else float(iv[:-1]) * {"s": 1, "h": 3600, "m": 60}[iv[-1]]
print(f"{'load':22} {'program':20} {'CPU':>22} {'wakeups/s':>10} {'RSS MiB':>8}")
for load in ["10 100ms", "1 1s", "50 1s", "1 1h"]:
    n, iv = load.split()
    idle = iv == "1h"
    points = int(n) * 63 * dur / secs(iv)
    best = {}
    for prog in ["edgegw", "telegraf-default", "telegraf-max_insert"]:
        r = rows.get((n, iv, prog))
        if not r:
            continue
        cpu = sorted(x[0] for x in r)[len(r) // 2] / 1000  # ms
        wake = sorted(x[1] for x in r)[len(r) // 2] / dur
        rss = sorted(x[2] for x in r)[len(r) // 2] / 1024
        fig = cpu / dur if idle else cpu / (points / 1000)
        unit = "ms CPU/s" if idle else "ms CPU/1000 points"
        best[prog] = (fig, wake, rss)
        print(f"{n + ' meters every ' + iv:22} {prog:20} {fig:10.2f} {unit:>11} {wake:10.1f} {rss:8.1f}")
    tel = [best[p] for p in ("telegraf-default", "telegraf-max_insert") if p in best]
    if "edgegw" in best and tel:
        b = min(tel, key=lambda x: x[0])
        e = best["edgegw"]
        print(f"{'':22} {'edgegw / best':20} {e[0] / b[0] if b[0] else float('inf'):10.2f} {'CPU':>11} {e[1] / b[1] if b[1] else float('inf'):10.2f} {e[2] / b[2]:8.2f}")
EOF
