#!/bin/sh
# Runs BenchmarkGatewayVsPeers (eastwest/bench_test.go): our east-west
# gateway against direct, HAProxy and nginx on loopback. Installs HAProxy
# and nginx's stream module first when they are missing and we are root.
set -eu
cd "$(dirname "$0")/.."
if ! command -v haproxy >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1 ||
	[ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy nginx libnginx-mod-stream
	else
		echo "missing haproxy/nginx: run apt-get install -y haproxy nginx libnginx-mod-stream as root" >&2
	fi
fi
echo "nproc: $(nproc)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kernel: $(uname -r)"
go version
haproxy -v 2>&1 | head -1 || true
nginx -v 2>&1 || true
exec go test -run='^$' -bench=GatewayVsPeers -benchtime=1x -timeout=15m ./eastwest/
