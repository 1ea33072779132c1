#!/usr/bin/env bash
# Installs, checks, removes and purges the amd64 .deb in a fresh Debian 12
# chroot made with debootstrap: what a user's dpkg does, on a clean system.
# Needs root and Debian's repositories; prints "skipped" and exits 0 when
# the machine cannot make a chroot.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "deb-chroot-test: skipped: needs root"; exit 0; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
cache=${EDGEGW_CHROOT_CACHE:-/var/cache/edgegw-test-chroot-v2.tar}
work=$(mktemp -d)
trap 'umount "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -f "$cache" ]; then
  mkdir "$work/root" && tar -xf "$cache" -C "$work/root"
elif debootstrap --variant=minbase --include=adduser,man-db bookworm "$work/root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1; then
  tar -cf "$cache" -C "$work/root" .
else
  echo "deb-chroot-test: skipped: debootstrap failed ($(tail -1 "$work/debootstrap.log"))"
  exit 0
fi
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/edgegw" ./cmd/edgegw
scripts/package/build-deb.sh amd64 "$work/edgegw" 0.1.0~chroot "$work"
cp "$work"/edgegw_*.deb "$work/root/tmp/edgegw.deb"
mount -t proc proc "$work/root/proc"
inroot() { chroot "$work/root" /bin/sh -c "$*"; }
fail() { echo "deb-chroot-test: $*" >&2; exit 1; }
inroot "dpkg -i /tmp/edgegw.deb" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i failed"; }
inroot "id edgegw" | grep -q dialout || fail "user edgegw is not in dialout"
[ "$(inroot 'stat -c %U:%a /var/lib/edgegw')" = "edgegw:750" ] || fail "state directory: $(inroot 'stat -c %U:%a /var/lib/edgegw')"
inroot "edgegw check -config /etc/edgegw/sensors.toml" >/dev/null || fail "packaged config does not pass check"
inroot "edgegw version" | grep -q "linux/amd64" || fail "edgegw version"
for page in edgegw sensors.toml; do
  inroot "MANPAGER=cat man $page 2>&1" | grep -q "edgegw manual" || fail "man $page: $(inroot "man $page 2>&1" | head -3)"
done
# An edited conffile survives a reinstall.
inroot "echo '# edited' >> /etc/edgegw/sensors.toml && dpkg -i /tmp/edgegw.deb" >/dev/null 2>&1 </dev/null || fail "reinstall"
inroot "grep -q '# edited' /etc/edgegw/sensors.toml" || fail "the conffile was overwritten"
inroot "dpkg -r edgegw" >/dev/null 2>&1 || fail "dpkg -r"
inroot "test ! -e /usr/bin/edgegw && test -e /etc/edgegw/sensors.toml && test -d /var/lib/edgegw" || fail "remove took too much or too little"
inroot "dpkg -P edgegw" >/dev/null 2>&1 || fail "dpkg -P"
inroot "test ! -e /etc/edgegw/sensors.toml && test ! -e /var/lib/edgegw && ! id edgegw 2>/dev/null" || fail "purge left things behind"

# The service through install, upgrade, remove and purge, as the maintainer
# scripts and Debian's systemd helpers decide it, with a recording systemctl
# stand-in (the chroot runs no systemd).
mkdir "$work/v2"
scripts/package/build-deb.sh amd64 "$work/edgegw" 0.2.0~chroot "$work/v2"
cp "$work"/v2/edgegw_*.deb "$work/root/tmp/edgegw-2.deb"
cp scripts/package/fake-systemctl.sh "$work/root/usr/bin/systemctl"
mkdir -p "$work/root/run/systemd/system"
calls() { inroot "cat /var/log/systemctl.log 2>/dev/null; : > /var/log/systemctl.log"; }
state() {
  inroot 'if [ -L /etc/systemd/system/multi-user.target.wants/edgegw.service ]; then printf enabled; else printf disabled; fi
          if [ -e /run/edgegw.active ]; then echo " active"; else echo " inactive"; fi'
}
expect() {
  local got log
  got=$(state) log=$(calls | tr '\n' ';')
  [ "$got" = "$1" ] || fail "$2: service $got, want $1 (systemctl calls: $log)"
  echo "$log"
}
dpkgq() { inroot "$*" >"$work/dpkg.log" 2>&1 </dev/null || { cat "$work/dpkg.log"; fail "$*"; }; }
dpkgq "dpkg -i /tmp/edgegw.deb"
log=$(expect "disabled inactive" "first install")
grep -Eq "(start|enable|preset) " <<<"$log" && fail "first install enabled or started the gateway: $log"
dpkgq "systemctl enable --now edgegw" && calls >/dev/null # the user, once the config is edited
dpkgq "dpkg -i /tmp/edgegw-2.deb"
log=$(expect "enabled active" "upgrade of a running gateway")
grep -q "restart edgegw.service" <<<"$log" || fail "the upgrade did not restart the gateway on the new binary: $log"
grep -q " stop " <<<"$log" && fail "the upgrade stopped the gateway: $log"
dpkgq "systemctl disable --now edgegw" && calls >/dev/null
dpkgq "dpkg -i /tmp/edgegw.deb" # 0.2.0 -> 0.1.0: configured as an upgrade
expect "disabled inactive" "upgrade of a stopped, disabled gateway" >/dev/null
dpkgq "systemctl enable --now edgegw" && calls >/dev/null
dpkgq "dpkg -r edgegw"
log=$(expect "disabled inactive" "remove")
grep -q "stop edgegw.service" <<<"$log" || fail "remove did not stop the gateway: $log"
dpkgq "dpkg -P edgegw"
dpkgq "EDGEGW_ENABLE=yes dpkg -i /tmp/edgegw.deb"
expect "enabled active" "install with EDGEGW_ENABLE=yes" >/dev/null
dpkgq "dpkg -P edgegw"
inroot "test ! -e /var/lib/systemd/deb-systemd-helper-enabled/edgegw.service.dsh-also" || fail "purge left the helpers' state"
rm -rf "$work/root/usr/bin/systemctl" "$work/root/run/systemd"

# Readings never sent: remove says how many stay, purge says it deletes them.
dpkgq "dpkg -i /tmp/edgegw.deb"
port=$(shuf -i 20000-60000 -n 1)
printf '[gateway]\nid = "chroot"\n[mqtt]\nbrokers = ["tcp://127.0.0.1:1"]\n[status]\nlisten = ""\n[buffer]\ncommit_interval = "50ms"\n[[bus]]\nname = "lan"\nprotocol = "modbus-tcp"\naddress = "127.0.0.1:%s"\n[[device]]\nname = "meter"\nbus = "lan"\ninterval = "100ms"\n  [[device.point]]\n  name = "v"\n' "$port" \
  > "$work/root/etc/edgegw/sensors.toml"
inroot "edgegw simulate -config /etc/edgegw/sensors.toml -listen 127.0.0.1:$port >/dev/null 2>&1 & echo \$! > /tmp/sim.pid"
inroot "runuser -u edgegw -- timeout -s TERM 3 edgegw run -config /etc/edgegw/sensors.toml >/dev/null 2>&1" || true
inroot 'kill $(cat /tmp/sim.pid)'
inroot "dpkg -r edgegw" >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "dpkg -r with unsent readings"; }
grep -Eq "edgegw: [0-9]+ readings were never sent" "$work/remove.log" || fail "remove did not say readings stay unsent: $(cat "$work/remove.log")"
inroot "test -s /var/lib/edgegw/buffer.db" || fail "remove deleted the buffer"
inroot "dpkg -P edgegw" >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg -P with unsent readings"; }
grep -Eq "deleting the buffer with [0-9]+ readings" "$work/purge.log" || fail "purge did not warn: $(cat "$work/purge.log")"
inroot "test ! -e /var/lib/edgegw" || fail "purge kept the buffer"
# The path without dpkg: scripts/install.sh.
mkdir -p "$work/root/tmp/src/scripts/package"
cp scripts/install.sh scripts/edgegw.service "$work/root/tmp/src/scripts/"
cp scripts/package/sensors.toml "$work/root/tmp/src/scripts/package/"
cp "$work/edgegw" "$work/root/tmp/edgegw"
inroot "sh /tmp/src/scripts/install.sh /tmp/edgegw" >"$work/install-sh.log" 2>&1 || { cat "$work/install-sh.log"; fail "install.sh failed"; }
inroot "id edgegw | grep -q dialout && test -x /usr/bin/edgegw && test -f /etc/systemd/system/edgegw.service" || fail "install.sh left no user, binary or unit"
inroot "edgegw check -config /etc/edgegw/sensors.toml" >/dev/null || fail "install.sh's config does not pass check"
echo "deb-chroot-test: ok: installed, checked, reinstalled keeping the edited conffile, removed, purged; service state through install, upgrade (running: restarted; stopped: kept), remove and purge; man pages; unsent readings reported at remove and purge; install.sh too"
