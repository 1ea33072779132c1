#!/usr/bin/env bash
# make deb-test: builds the amd64 .deb and checks what dpkg will see: control
# fields, files and modes, the conffile, the maintainer scripts, the unit.
# scripts/test-deb-chroot.sh goes further: install and purge in a chroot.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CGO_ENABLED=0 GOARCH=amd64 go build -trimpath -ldflags '-s -w' -o "$work/edgegw" ./cmd/edgegw
scripts/package/build-deb.sh amd64 "$work/edgegw" 0.1.0~test "$work"
deb=$(ls "$work"/*.deb)
fail() { echo "deb-test: $*" >&2; exit 1; }
info=$(dpkg-deb -I "$deb")
for want in "Package: edgegw" "Architecture: amd64" "Depends: adduser" "Version: 0.1.0~test"; do
  grep -q "$want" <<<"$info" || fail "control lacks '$want'"
done
contents=$(dpkg-deb -c "$deb")
for want in "-rwxr-xr-x .* ./usr/bin/edgegw" "-rw-r--r-- .* ./lib/systemd/system/edgegw.service" \
            "-rw-r----- .* ./etc/edgegw/sensors.toml" "./etc/edgegw/profiles/"; do
  grep -Eq -- "$want" <<<"$contents" || fail "package lacks '$want'"
done
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/edgegw/sensors.toml "$work/control/conffiles" || fail "sensors.toml is not a conffile"
for s in postinst prerm postrm; do [ -x "$work/control/$s" ] || fail "no $s"; done
grep -q "adduser --system" "$work/control/postinst" || fail "postinst makes no user"
dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/edgegw" check -config "$work/root/etc/edgegw/sensors.toml" >/dev/null || fail "the packaged sensors.toml does not pass check"
cmp -s "$work/root/lib/systemd/system/edgegw.service" scripts/edgegw.service || fail "unit differs from scripts/edgegw.service"
for page in usr/share/man/man1/edgegw.1.gz usr/share/man/man5/sensors.toml.5.gz; do
  # man's own check: groff warnings (bad requests, escapes) fail the test.
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$work/root/$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || fail "$page: $warnings"
done

# Debian's own checker on the package of every architecture: no error or
# warning but those overridden, with their reasons, in the package.
command -v lintian >/dev/null || fail "lintian is not installed (scripts/deps.sh test)"
for pair in armhf:arm:6 arm64:arm64: amd64:amd64:; do
  IFS=: read -r debarch goarch goarm <<<"$pair"
  mkdir -p "$work/$debarch"
  CGO_ENABLED=0 GOARCH=$goarch GOARM=$goarm go build -trimpath -ldflags '-s -w' -o "$work/$debarch/edgegw" ./cmd/edgegw
  scripts/package/build-deb.sh "$debarch" "$work/$debarch/edgegw" 0.1.0~test "$work/$debarch"
  lintian --fail-on error,warning "$work/$debarch"/edgegw_*.deb \
    || fail "lintian finds errors or warnings in the $debarch package"
done
echo "deb-test: ok: $(basename "$deb"), $(stat -c %s "$deb") bytes; lintian clean on armhf, arm64 and amd64"
