#!/bin/bash
# Measures what connections cost the east-west gateway and HAProxy on
# loopback, with a plain TCP echo backend (no TLS in the loop): the
# proxy's CPU per connection, 64-byte echo round trips, RSS per idle
# connection (eastwest/internal/bench/cmd/gwcost). Each argument is
# another gwbench binary (an older gateway) measured alternately with
# this tree's. CONNS, ECHOES, IDLE and ROUNDS override the sizes.
# See docs/benchmarks-gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/haproxy-config.sh
. scripts/haproxy-config.sh
CONNS=${CONNS:-5000} ECHOES=${ECHOES:-10000} IDLE=${IDLE:-1000} ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
go build -o "$dir/gwbench" ./eastwest/internal/bench/cmd/gwbench
go build -o "$dir/gwcost" ./eastwest/internal/bench/cmd/gwcost
name=svc-a.cluster-b.test
backend=$("$dir/gwcost" -free-addr)
"$dir/gwbench" -echo -listen "$backend" -stdin=false -lifetime 60m >/dev/null 2>&1 &
pids="$pids $!"

# start_contender NAME: starts it on a free address; sets addr and pid.
start_contender() {
	addr=$("$dir/gwcost" -free-addr)
	case $1 in
	haproxy)
		haproxy_config 1 "$addr" "$name" "$backend" >"$dir/haproxy.cfg"
		haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
		;;
	*)
		GOMAXPROCS=1 "$1" -listen "$addr" -name "$name" -upstream "$backend" -stdin=false -lifetime 60m >>"$dir/gw.log" 2>&1 &
		;;
	esac
	pid=$!
	pids="$pids $pid"
	sleep 1
}

names=("$dir/gwbench" haproxy "$@")
addrs=() procs=()
for c in "${names[@]}"; do
	start_contender "$c"
	addrs+=("$addr") procs+=("$pid")
done
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!names[@]}"; do
	echo "== ${names[$i]}: idle"
	"$dir/gwcost" -addr "${addrs[$i]}" -pid "${procs[$i]}" -conns 0 -echoes 0 -idle "$IDLE"
done
for r in $(seq "$ROUNDS"); do
	for i in "${!names[@]}"; do
		echo "== ${names[$i]}: round $r"
		"$dir/gwcost" -addr "${addrs[$i]}" -pid "${procs[$i]}" -conns "$CONNS" -echoes "$ECHOES"
	done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
