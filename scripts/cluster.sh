#!/usr/bin/env bash
# A local broker cluster on loopback, for the demo and by hand:
# N Mosquitto brokers bridged together (each bridges every topic both ways to
# the first) behind an haproxy TCP front that fails over between them.
#
# usage: scripts/cluster.sh start DIR [N] [FRONT_PORT]   (defaults: 2 brokers, port 18830)
#        scripts/cluster.sh stop DIR
# Brokers listen on FRONT_PORT+1 .. FRONT_PORT+N; everything started is
# recorded in DIR/pids and stopped by `stop`.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [N] [FRONT_PORT]" >&2; exit 2; }

stop() {
  [ -f "$dir/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
  rm -f "$dir/pids"
}

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster: nothing listens on 127.0.0.1:$1; see $dir/*.log" >&2
  return 1
}

case "$cmd" in
stop) stop ;;
start)
  n=${3:-2}; front=${4:-18830}
  mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
  mkdir -p "$dir"; stop
  servers=""
  for i in $(seq 1 "$n"); do
    port=$((front + i))
    {
      echo "listener $port 127.0.0.1"
      echo "allow_anonymous true"
      echo "persistence false"
      if [ "$i" -gt 1 ]; then
        echo "connection bridge-$i"
        echo "address 127.0.0.1:$((front + 1))"
        echo "topic # both 1"
        echo "restart_timeout 1"
      fi
    } > "$dir/broker$i.conf"
    "$mosquitto" -c "$dir/broker$i.conf" > "$dir/broker$i.log" 2>&1 &
    echo $! >> "$dir/pids"
    servers+="    server broker$i 127.0.0.1:$port check inter 1s fall 2 rise 1"$'\n'
  done
  cat > "$dir/haproxy.cfg" <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    # longer than any MQTT keepalive, so idle clients are not cut
    timeout client 10m
    timeout server 10m
frontend mqtt
    bind 127.0.0.1:$front
    default_backend brokers
backend brokers
    balance leastconn
$servers
CFG
  "$haproxy" -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 &
  echo $! >> "$dir/pids"
  for i in $(seq 1 "$n"); do wait_port $((front + i)); done
  wait_port "$front"
  echo "cluster: $n brokers on 127.0.0.1:$((front + 1))-$((front + n)), haproxy front on 127.0.0.1:$front"
  ;;
*) echo "usage: $0 start|stop DIR [N] [FRONT_PORT]" >&2; exit 2 ;;
esac
