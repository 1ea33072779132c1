#!/usr/bin/env bash
# Bytes on the wire per SDM630 meter per hour, polled every second from the
# simulator (values drifting like a real meter's), for every_poll (every
# reading in full), report = "change" with the profile's deadbands, and
# change with batches (batch_linger 10s), plain and zstd, and change as
# Sparkplug B: five gateways side by side in one run, each behind a
# byte-counting TCP proxy to one local Mosquitto (cmd/edgegw/bandwidth_test.go).
#
# usage: scripts/bench/bandwidth.sh [DURATION] [DEVICES]   (default: 5m 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
go test ./cmd/edgegw -run '^TestBandwidth$' -count=1 -v -timeout 0 \
  -bandwidth.for "${1:-5m}" -bandwidth.devices "${2:-10}" | grep -E 'bandwidth_test.go|^(ok|FAIL|---)'
