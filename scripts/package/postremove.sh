#!/bin/sh
# edgegw postrm: on purge only, the buffered readings and the user go too.
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/edgegw
    if getent passwd edgegw >/dev/null; then
        deluser --quiet --system edgegw || true
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
