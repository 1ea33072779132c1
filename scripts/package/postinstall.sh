#!/bin/sh
# edgegw postinst: a system user in the dialout group (serial ports), its
# state directory (the flash buffer), and systemd told of the unit. The
# service is not started: edit /etc/edgegw/sensors.toml, then
#   edgegw check && systemctl enable --now edgegw
set -e
if ! getent passwd edgegw >/dev/null; then
    adduser --system --group --home /var/lib/edgegw --no-create-home --quiet edgegw
fi
if getent group dialout >/dev/null; then
    adduser --quiet edgegw dialout
fi
mkdir -p /var/lib/edgegw
chown edgegw:edgegw /var/lib/edgegw
chmod 0750 /var/lib/edgegw
chgrp edgegw /etc/edgegw/sensors.toml
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # After an upgrade, a running gateway picks up the new binary.
    if systemctl is-active --quiet edgegw; then
        systemctl restart edgegw || true
    fi
fi
echo "edgegw: edit /etc/edgegw/sensors.toml, check it with 'edgegw check', then: systemctl enable --now edgegw"
