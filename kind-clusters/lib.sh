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

# copy_gateway_credential puts the gateway's first SVID, which the control
# plane writes into its volume (gateway.pem, beside the mesh CA's ca.pem),
# into the Secret federate-gateway that the gateway Deployment mounts. The
# images hold no shell, so a short-lived Pod with one reads the volume.
copy_gateway_credential() {
	local c=$1 pod=federate-gateway-credential out leader i
	# The leading replica wrote it: it labels its Pod federate.io/role=leader.
	for i in $(seq 1 90); do
		leader=$(kc "$c" -n "$NS" get pods -l federate.io/role=leader -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
		[ -n "$leader" ] && break
		[ "$i" -eq 1 ] && say "waiting for $c's control plane to elect a leader"
		sleep 2
	done
	[ -n "$leader" ] || die "no control plane replica leads in $c: kubectl --context $(ctx "$c") -n $NS logs statefulset/federate-controlplane"
	kc "$c" -n "$NS" delete pod "$pod" --ignore-not-found >/dev/null
	kc "$c" -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
  containers:
  - name: read
    image: curlimages/curl
    command: [sh, -c, 'until [ -s /data/gateway.pem ] && [ -s /data/ca.pem ]; do sleep 1; done; base64 /data/gateway.pem | tr -d "\n"; echo; base64 /data/ca.pem | tr -d "\n"']
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data-$leader, readOnly: true}
YAML
	kc "$c" -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$pod" --timeout=180s >/dev/null ||
		die "could not read the gateway credential in $c: kubectl --context $(ctx "$c") -n $NS describe pod $pod"
	out=$(kc "$c" -n "$NS" logs "pod/$pod")
	kc "$c" -n "$NS" delete pod "$pod" --wait=false >/dev/null
	kc "$c" -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: federate-gateway
data:
  gateway.pem: $(printf '%s\n' "$out" | sed -n 1p)
  ca.pem: $(printf '%s\n' "$out" | sed -n 2p)
YAML
}
