#!/bin/sh
# Installs edgegw on a device without dpkg (Buildroot, Yocto, Alpine with
# systemd...): the binary, the systemd unit, a system user in dialout, the
# state directory and, if none is there yet, /etc/edgegw/sensors.toml.
#   usage: sudo scripts/install.sh dist/edgegw-linux-armv6    (from a source tree)
set -eu
bin=${1:?usage: $0 EDGEGW_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
"$bin" version >/dev/null || { echo "install.sh: $bin does not run on this machine (wrong architecture?)" >&2; exit 1; }

install -m 0755 "$bin" /usr/bin/edgegw
if ! getent passwd edgegw >/dev/null; then
    if command -v adduser >/dev/null && adduser --help 2>&1 | grep -q -- --system; then
        adduser --system --group --home /var/lib/edgegw --no-create-home edgegw
    else
        groupadd --system edgegw 2>/dev/null || true
        useradd --system --gid edgegw --home-dir /var/lib/edgegw --no-create-home --shell /usr/sbin/nologin edgegw
    fi
fi
getent group dialout >/dev/null && usermod -a -G dialout edgegw
install -d -m 0750 -o edgegw -g edgegw /var/lib/edgegw
install -d -m 0755 /etc/edgegw /etc/edgegw/profiles
if [ ! -e /etc/edgegw/sensors.toml ]; then
    install -m 0640 -g edgegw "$here/package/sensors.toml" /etc/edgegw/sensors.toml
fi
install -m 0644 "$here/edgegw.service" /etc/systemd/system/edgegw.service
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "edgegw installed: edit /etc/edgegw/sensors.toml, run 'edgegw check', then: systemctl enable --now edgegw"
