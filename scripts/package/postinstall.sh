#!/bin/sh
# edgegw postinst: a system user in the dialout group (serial ports), its
# state directory (the flash buffer), and the unit handed to Debian's
# systemd helpers:
# - first install: installed, not enabled or started, until the config is
#   edited (edgegw check && systemctl enable --now edgegw), unless the
#   installing admin asked for it: EDGEGW_ENABLE=yes dpkg -i edgegw_*.deb;
# - upgrade: a gateway that runs (or is enabled) is restarted on the new
#   binary, one that is stopped and disabled stays so.
set -e
unit=edgegw.service
if [ "$1" = configure ]; then
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
fi
if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
    if [ -z "$2" ] && [ "${EDGEGW_ENABLE:-}" = yes ]; then
        deb-systemd-helper enable "$unit" >/dev/null || true
    elif [ -n "$2" ] && deb-systemd-helper --quiet was-enabled "$unit"; then
        deb-systemd-helper enable "$unit" >/dev/null || true
    else
        deb-systemd-helper update-state "$unit" >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then
            # Restarts it if it runs or is enabled: an enabled gateway is
            # one meant to run (and older packages stopped it in prerm).
            deb-systemd-invoke restart "$unit" >/dev/null || true
        elif [ "${EDGEGW_ENABLE:-}" = yes ]; then
            deb-systemd-invoke start "$unit" >/dev/null || true
        fi
    fi
fi
if [ "$1" = configure ] && [ -z "$2" ] && [ "${EDGEGW_ENABLE:-}" != yes ]; then
    echo "edgegw: edit /etc/edgegw/sensors.toml, check it with 'edgegw check', then: systemctl enable --now edgegw"
fi
