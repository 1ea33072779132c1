#!/bin/sh
# edgegw prerm: stop the service; a clean stop commits every reading taken.
set -e
if [ -d /run/systemd/system ] && systemctl is-active --quiet edgegw; then
    systemctl stop edgegw || true
fi
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl disable edgegw >/dev/null 2>&1 || true
fi
