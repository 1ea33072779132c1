#!/usr/bin/env bash
# Builds one .deb with nfpm: build-deb.sh ARCH BINARY VERSION OUTDIR
# (ARCH in Debian's names: armhf, arm64, amd64).
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=$1 binary=$2 version=$3 out=$4
cfg=$(mktemp --suffix=.yaml)
trap 'rm -f "$cfg"' EXIT
sed -e "s#\${ARCH}#$arch#g" -e "s#\${BINARY}#$binary#g" -e "s#\${VERSION}#$version#g" scripts/package/nfpm.yaml > "$cfg"
go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.0 pkg --packager deb --config "$cfg" --target "$out/" >/dev/null
