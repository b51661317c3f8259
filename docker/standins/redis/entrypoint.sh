#!/bin/sh
# Like the official image's entrypoint: flags alone mean redis-server FLAGS;
# redis-server runs as user redis with /data as its directory; without a
# config file protected mode is off (the official image does the same, so
# other containers on the network can connect).
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
    conf=
    case "$2" in *.conf) conf=1 ;; esac
    [ -n "$conf" ] || set -- "$@" --protected-mode no
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data 2>/dev/null || true
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
