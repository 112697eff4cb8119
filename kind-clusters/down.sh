#!/usr/bin/env bash
# Deletes the lab's kind clusters and stops cloud-provider-kind.
# shellcheck source=kind-clusters/lib.sh
. "$(dirname "$0")/lib.sh"

need kind
for c in "${CLUSTERS[@]}"; do
	if kind get clusters | grep -qx "$c"; then
		say "deleting cluster $c"
		kind delete cluster --name "$c"
	fi
done
if [ -f "$STATE/cloud-provider-kind.pid" ]; then
	pid=$(cat "$STATE/cloud-provider-kind.pid")
	if kill -0 "$pid" 2>/dev/null; then
		say "stopping cloud-provider-kind ($pid)"
		kill "$pid"
	fi
fi
rm -rf "$STATE"
say "the lab is down"
