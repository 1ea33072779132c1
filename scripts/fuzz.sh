#!/usr/bin/env bash
# make fuzz: every fuzz target for FUZZTIME (make test runs only their seed
# corpus). A target named here that its package does not have is an error:
# `go test -fuzz` on a package without it passes silently, which once left
# the config parser unfuzzed for a round.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-60s}
targets=(
  "./gateway/config FuzzParseConfig"
  "./drivers/modbus FuzzDecode"
  "./drivers/modbus FuzzLineFrame"
  "./drivers/modbus/simulator FuzzRequests"
  "./drivers/modbus/server FuzzRequest"
  "./drivers/serial FuzzFraming"
  "./drivers/serial FuzzParsers"
  "./gateway/batch FuzzDecode"
  "./gateway/uplink FuzzFrames"
  "./gateway/uplink FuzzCommand"
  "./gateway/sparkplug FuzzReceived"
)
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  if ! go test -list "^Fuzz" "$pkg" | grep -x "$name" >/dev/null; then
    echo "fuzz: $pkg has no $name: fix the list in scripts/fuzz.sh" >&2
    exit 1
  fi
done
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "== $pkg $name for $fuzztime"
  go test "$pkg" -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime"
done
