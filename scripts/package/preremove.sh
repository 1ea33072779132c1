#!/bin/sh
# edgegw prerm: on remove only, stop the gateway (a clean stop commits every
# reading taken) and say how many readings were never sent: they stay in
# /var/lib/edgegw until a purge. An upgrade leaves the gateway running:
# postinst restarts it on the new binary, so the gateway is down for one
# restart, not for the upgrade.
set -e
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        deb-systemd-invoke stop edgegw.service >/dev/null || true
    fi
    # As the gateway's user: files the buffer writes stay the gateway's.
    unsent=$(runuser -u edgegw -- /usr/bin/edgegw buffer -count -config /etc/edgegw/sensors.toml 2>/dev/null) || unsent=
    case "$unsent" in
    '' | 0 | *[!0-9]*) rm -f /var/lib/edgegw/unsent-at-remove ;;
    *)
        echo "$unsent" > /var/lib/edgegw/unsent-at-remove
        echo "edgegw: $unsent readings were never sent; they stay in /var/lib/edgegw (reinstall to send them; purge deletes them)" >&2
        ;;
    esac
fi
