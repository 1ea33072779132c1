#!/usr/bin/env bash
# make bench: every figure of docs/BENCHMARKS.md, on this machine, in one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "== binary sizes (make cross)"
make -s cross >/dev/null
for f in dist/edgegw-linux-*; do printf '%-28s %8d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"; done
echo "== start to first reading"
scripts/bench/first-reading.sh
echo "== encoding, decoding, config loading, serial parsing"
go test -run '^$' -bench . -benchmem ./gateway ./drivers/modbus ./drivers/serial
go test -run '^$' -bench BenchmarkRTUCycle9600 -benchtime 20x ./drivers/modbus/simulator
echo "== buffer: append, drain, memory, flash wear"
go test -run '^$' -bench 'BenchmarkAppend$' -benchtime 1000000x -count 5 ./buffer
go test -run '^$' -bench 'BenchmarkDrain|BenchmarkMemory1M' -benchtime 1x -timeout 30m ./buffer
go test -run '^$' -bench BenchmarkFlashWear -benchtime 1x ./buffer
echo "== uplink: drain vs bare paho, failover"
go test -run '^$' -bench 'BenchmarkDrainToBroker|BenchmarkFailover' -benchtime 1x -timeout 30m ./gateway/uplink
echo "== MQTT 3.1.1: fallback to the first reading, heap per uplink in a fleet"
go test -run '^$' -bench BenchmarkFallback -benchtime 20x ./gateway/uplink
PROTOCOL=3.1.1 ORDERS=spread scripts/bench/fleet.sh 1000
echo "== on the device: RSS with 50 devices, start to READY"
scripts/bench/rss.sh
echo "== bandwidth: every_poll vs report by exception (SDM630, 1 s polls)"
scripts/bench/bandwidth.sh 5m 10
echo "== CPU and wakeups beside Telegraf (builds Telegraf once into ~/.cache/edgegw-bench)"
scripts/bench/cpu.sh
