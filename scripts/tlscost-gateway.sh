#!/bin/bash
# Measures what TLS connections and TLS bulk cost through the east-west
# gateway and HAProxy, side by side (eastwest/internal/bench/cmd/gwtls):
# the rate, CPU per connection (or per MB) of the whole machine and of the
# proxy, and the proxy's context switches. Each argument is another gwbench
# binary (an older gateway) measured in the same rounds as this tree's.
# THREADS (GOMAXPROCS and HAProxy's nbthread), ROUNDS, FOR and BULK_MIB
# override the sizes. See docs/benchmarks-gateway.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/haproxy-config.sh
. scripts/haproxy-config.sh
THREADS=${THREADS:-1} ROUNDS=${ROUNDS:-5} FOR=${FOR:-3s} BULK_MIB=${BULK_MIB:-256}
command -v haproxy >/dev/null || { echo "missing haproxy: apt-get install -y haproxy" >&2; exit 1; }
dir=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
go build -o "$dir/gwbench" ./eastwest/internal/bench/cmd/gwbench
go build -o "$dir/gwcost" ./eastwest/internal/bench/cmd/gwcost
go build -o "$dir/gwtls" ./eastwest/internal/bench/cmd/gwtls
name=svc-a.cluster-b.test
backend=$("$dir/gwcost" -free-addr)
"$dir/gwtls" -backend "$backend" -bulk-mib "$BULK_MIB" &
pids="$pids $!"
targets="direct=$backend=0"
i=0
for bin in "$dir/gwbench" "$@"; do
	addr=$("$dir/gwcost" -free-addr)
	GOMAXPROCS=$THREADS "$bin" -listen "$addr" -name "$name" -upstream "$backend" -stdin=false -lifetime 60m >>"$dir/gw.log" 2>&1 &
	pids="$pids $!"
	label=gateway
	[ "$i" -gt 0 ] && label="gw$i"
	targets="$targets,$label=$addr=$!"
	i=$((i + 1))
done
addr=$("$dir/gwcost" -free-addr)
haproxy_config "$THREADS" "$addr" "$name" "$backend" >"$dir/haproxy.cfg"
haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids="$pids $!"
targets="$targets,haproxy=$addr=$!"
sleep 1
echo "$THREADS thread(s) per proxy; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((a = 1; a <= $#; a++)); do echo "gw$a: ${!a}"; done
"$dir/gwtls" -targets "$targets" -rounds "$ROUNDS" -for "$FOR" -bulk-mib "$BULK_MIB"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
