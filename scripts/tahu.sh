#!/usr/bin/env bash
# Installs Eclipse Tahu's Sparkplug B codec (npm sparkplug-payload, versions
# pinned by internal/tahu/package-lock.json) for the tests, once.
set -euo pipefail
dir="$(dirname "$0")/../internal/tahu"
[ -d "$dir/node_modules/sparkplug-payload" ] && exit 0
echo "edgegw: installing the Tahu codec for the tests (npm ci in internal/tahu)" >&2
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
