#!/usr/bin/env bash
# Brings up three kind clusters federated by a hub: builds the images with
# 'make images' (no Docker build), loads the archives into kind, gives
# gateways LoadBalancer addresses (cloud-provider-kind), applies each
# cluster's overlay deploy/overlays/<cluster>, joins every cluster with a
# token and deploys the coffee shop. Stop everything with down.sh.
# shellcheck source=kind-clusters/lib.sh
. "$(dirname "$0")/lib.sh"

need docker kind kubectl go make openssl cloud-provider-kind
mkdir -p "$STATE"

say "building the federate CLI and the images (no Docker build: make images)"
(cd "$ROOT" && go build -o "$STATE/bin/" ./cmd/federate)
# Only the host's platform: kind's nodes run it, and one platform builds in
# half the time. A release builds both (make images).
make -C "$ROOT" --no-print-directory images IMAGE_REPOSITORY="$IMAGE_REPOSITORY" IMAGE_TAG="$IMAGE_TAG" \
	IMAGE_PLATFORMS="$(go env GOARCH)"

for c in "${CLUSTERS[@]}"; do
	if kind get clusters | grep -qx "$c"; then
		say "cluster $c exists"
	else
		say "creating cluster $c"
		kind create cluster --config "$LAB/$c.yaml"
	fi
	kind load image-archive --name "$c" "$ROOT/dist/federate.oci.tar"
	kind load image-archive --name "$c" "$ROOT/dist/eastwest-gateway.oci.tar"
done

if [ ! -f "$STATE/cloud-provider-kind.pid" ] || ! kill -0 "$(cat "$STATE/cloud-provider-kind.pid")" 2>/dev/null; then
	say "starting cloud-provider-kind for LoadBalancer addresses"
	nohup cloud-provider-kind >"$STATE/cloud-provider-kind.log" 2>&1 &
	echo $! >"$STATE/cloud-provider-kind.pid"
fi

say "deploying the hub in $HUB_CLUSTER"
kc "$HUB_CLUSTER" apply -k "$ROOT/deploy/overlays/hub"
hub_ip=$(wait_lb "$HUB_CLUSTER" federate-hub)
kc "$HUB_CLUSTER" -n "$NS" create configmap federate-hub \
	--from-literal=mesh="$MESH" --from-literal=advertise="$hub_ip:15012" --dry-run=client -o yaml |
	kc "$HUB_CLUSTER" apply -f -
kc "$HUB_CLUSTER" -n "$NS" rollout restart statefulset/federate-hub
kc "$HUB_CLUSTER" -n "$NS" rollout status statefulset/federate-hub --timeout=180s

for c in "${CLUSTERS[@]}"; do
	say "deploying the control plane and gateway in $c (deploy/overlays/$c)"
	kc "$c" apply --server-side -k "$ROOT/deploy/overlays/$c"

	say "joining $c"
	token=$(kc "$HUB_CLUSTER" -n "$NS" exec federate-hub-0 -- \
		federate token create --hub 127.0.0.1:15012 --cluster "$c" --credential /var/lib/federate/admin.pem)
	kubeconfig=$STATE/$c.kubeconfig
	kind get kubeconfig --name "$c" >"$kubeconfig"
	"$STATE/bin/federate" join --token "$token" --kubeconfig "$kubeconfig"
	kc "$c" -n "$NS" rollout restart statefulset/federate-controlplane
done
for c in "${CLUSTERS[@]}"; do
	kc "$c" -n "$NS" rollout status statefulset/federate-controlplane --timeout=300s
	kc "$c" -n "$NS" rollout status deployment/eastwest-gateway --timeout=180s
done

say "deploying the coffee shop"
if [ ! -f "$STATE/tls.crt" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=coffeeshop \
		-keyout "$STATE/tls.key" -out "$STATE/tls.crt" 2>/dev/null
fi
for c in "${CLUSTERS[@]}"; do
	kc "$c" apply -f "$LAB/coffeeshop/namespace.yaml"
	kc "$c" -n shop create secret tls coffeeshop-tls --cert "$STATE/tls.crt" --key "$STATE/tls.key" --dry-run=client -o yaml |
		kc "$c" apply -f -
done
# order runs in east and west, so that it can fail over; menu in central.
kc east apply -f "$LAB/coffeeshop/order.yaml"
kc west apply -f "$LAB/coffeeshop/order.yaml"
kc central apply -f "$LAB/coffeeshop/menu.yaml"
kc central apply -f "$LAB/coffeeshop/client.yaml"

say "the lab is up: run kind-clusters/demo.sh"
