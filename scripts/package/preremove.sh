#!/bin/sh
# edgegw prerm: on remove only, stop the gateway (a clean stop commits every
# reading taken). An upgrade leaves it running: postinst restarts it on the
# new binary, so the gateway is down for one restart, not for the upgrade.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop edgegw.service >/dev/null || true
fi
