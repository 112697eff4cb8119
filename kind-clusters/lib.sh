#!/usr/bin/env bash
# Shared settings of the kind lab scripts; sourced, not run.
# shellcheck disable=SC2034 # the scripts that source this use the names

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=$ROOT/kind-clusters
STATE=$LAB/.state
CLUSTERS=(east west central)
HUB_CLUSTER=east
MESH=shop
# The images 'make images' builds for the lab; deploy/overlays/lab names
# the same repository and tag.
IMAGE_REPOSITORY=federate
IMAGE_TAG=dev
NS=federate-system

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || die "$tool is missing: see kind-clusters/README.md"
	done
}

ctx() { printf 'kind-%s' "$1"; }
kc() { local c=$1; shift; kubectl --context "$(ctx "$c")" "$@"; }

# wait_lb prints the LoadBalancer address of a Service once it has one.
wait_lb() {
	local c=$1 svc=$2 ip i
	for i in $(seq 1 120); do
		ip=$(kc "$c" -n "$NS" get service "$svc" -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
		if [ -n "$ip" ]; then
			printf '%s' "$ip"
			return 0
		fi
		[ "$i" -eq 1 ] && say "waiting for a LoadBalancer address for $svc in $c" >&2
		sleep 2
	done
	die "no LoadBalancer address for $svc in $c: is cloud-provider-kind running? (see $STATE/cloud-provider-kind.log)"
}

