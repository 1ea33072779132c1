#!/usr/bin/env bash
# Runs the buffer, drivers and quietnet tests as linux/arm (GOARM=6, a Pi Zero) and
# linux/arm64 binaries under qemu-user-static: proof that the ARM builds
# work, not just compile. Part of make test.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(./buffer/... ./drivers/... ./internal/quietnet)
run() { # emulator goarch [goarm]
  local emu=$1 arch=$2 arm=${3:-}
  command -v "$emu" >/dev/null || { echo "qemu-test: $emu is missing: run scripts/deps.sh test" >&2; exit 1; }
  echo "qemu-test: linux/$arch${arm:+ GOARM=$arm} under $emu"
  CGO_ENABLED=0 GOARCH=$arch GOARM=$arm EDGEGW_TEST_EXEC=$emu \
    go test -count=1 -exec "$emu" "${pkgs[@]}"
}
run qemu-arm-static arm 6
run qemu-aarch64-static arm64
