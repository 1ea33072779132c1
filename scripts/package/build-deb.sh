#!/usr/bin/env bash
# Builds one .deb with nfpm: build-deb.sh ARCH BINARY VERSION OUTDIR
# (ARCH in Debian's names: armhf, arm64, amd64). MAINTAINER (environment)
# is the Maintainer field and the changelog's signature.
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=$1 binary=$2 version=$3 out=$4
maintainer=${MAINTAINER:-edgegw maintainers <maintainers@edgegw.org>}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Reproducible: dates from the last commit, gzip without names or times.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
go run ./scripts/manpage -version "$version" -out "$work"
gzip -9n "$work/edgegw.1" "$work/sensors.toml.5"
go run ./scripts/copyright "$binary" > "$work/copyright"
{
  echo "edgegw ($version) unstable; urgency=medium"
  echo
  echo "  * Release $version, built from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo "    What changed: the project's git history."
  echo
  echo " -- $maintainer  $(LC_ALL=C date -u -R -d "@$epoch")"
} > "$work/changelog"
gzip -9n "$work/changelog"
cfg="$work/nfpm.yaml"
sed -e "s#\${ARCH}#$arch#g" -e "s#\${BINARY}#$binary#g" -e "s#\${VERSION}#$version#g" \
    -e "s#\${MAINTAINER}#$maintainer#g" -e "s#\${WORK}#$work#g" scripts/package/nfpm.yaml > "$cfg"
SOURCE_DATE_EPOCH=$epoch go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.0 pkg --packager deb --config "$cfg" --target "$out/" >/dev/null
