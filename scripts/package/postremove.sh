#!/bin/sh
# edgegw postrm: remove disables the unit and keeps the config and the
# buffered readings; purge removes those, the user and the helpers' state.
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
fi
if [ "$1" = remove ]; then
    deb-systemd-helper disable edgegw.service >/dev/null || true
fi
if [ "$1" = purge ]; then
    deb-systemd-helper purge edgegw.service >/dev/null || true
    if [ -s /var/lib/edgegw/unsent-at-remove ]; then
        echo "edgegw: deleting the buffer with $(cat /var/lib/edgegw/unsent-at-remove) readings that were never sent" >&2
    fi
    rm -rf /var/lib/edgegw
    if getent passwd edgegw >/dev/null; then
        deluser --quiet --system edgegw || true
    fi
fi
