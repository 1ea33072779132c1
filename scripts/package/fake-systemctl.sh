#!/bin/sh
# A recording stand-in for systemctl, for scripts/test-deb-chroot.sh: the
# chroot runs no systemd. It logs every call and keeps edgegw's state as
# systemd would: enabled = the multi-user.target.wants link, active = a file.
echo "systemctl $*" >> /var/log/systemctl.log
link=/etc/systemd/system/multi-user.target.wants/edgegw.service
active=/run/edgegw.active
verb= now=
for a in "$@"; do
    case "$a" in
    --now) now=1 ;;
    -*) ;;
    *) [ -z "$verb" ] && verb=$a ;;
    esac
done
case "$verb" in
is-enabled) if [ -L "$link" ]; then echo enabled; else echo disabled; exit 1; fi ;;
is-active) [ -e "$active" ] ;;
enable | preset)
    mkdir -p "${link%/*}" && ln -sf /lib/systemd/system/edgegw.service "$link"
    [ -z "$now" ] || touch "$active" ;;
disable) rm -f "$link"; [ -z "$now" ] || rm -f "$active" ;;
start | restart) touch "$active" ;;
stop) rm -f "$active" ;;
esac
