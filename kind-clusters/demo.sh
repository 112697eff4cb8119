#!/usr/bin/env bash
# The failover demo: a client in central calls order, which east and west
# export, through the gateway named by central's imported EndpointSlices.
# Scaling order down in east moves the calls to west; scaling it up brings
# them back.
# shellcheck source=kind-clusters/lib.sh
. "$(dirname "$0")/lib.sh"

need kubectl
sni=outbound_.8080_._.order.shop.svc.cluster.local

# call asks order once from central's client Pod, through the first ready
# gateway among central's EndpointSlices for the import.
call() {
	local target
	target=$(kc central -n shop get endpointslices -l multicluster.kubernetes.io/service-name=order \
		-o jsonpath='{range .items[*]}{range .endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}{end}' | head -n 1)
	[ -n "$target" ] || { echo "no ready cluster exports order"; return 0; }
	kc central -n shop exec deploy/client -- \
		curl -sk --max-time 5 --connect-to "$sni:443:$target:15443" "https://$sni/" | grep -m1 '^Hostname' || echo "call failed"
}

say "central imports order from:"
kc central -n shop get serviceimport order -o jsonpath='{range .status.clusters[*]}{.cluster}{" "}{end}'
echo
say "calling order from central"
call

say "failing over: order in east scaled to 0"
kc east -n shop scale deployment/order --replicas=0
kc east -n shop delete endpointslice -l kubernetes.io/service-name=order --ignore-not-found
sleep 5
call

say "recovering: order in east scaled back to 1"
kc east -n shop scale deployment/order --replicas=1
kc east -n shop rollout status deployment/order --timeout=120s
sleep 5
call
