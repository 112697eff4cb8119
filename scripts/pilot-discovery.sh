#!/bin/sh
# Builds Istio's real pilot-discovery (istiod) that the Istio tests run, once per pinned
# version, into a cache directory outside the repository, and prints the binary's path.
# A finished binary is reused; a build takes about 15 minutes of CPU time (41 minutes
# of wall time measured on two cores shared with other builds).
#
# istio.io/istio has no replace directives at this pin, so a scratch module in a
# temporary directory that requires it is enough (unlike kube-apiserver, no module is
# kept in the repository).
set -eu

pin=v0.0.0-20260827124520-eed52ebb66ad
cache=${FEDERATE_CACHE:-$HOME/.cache/federate}
out=$cache/pilot-discovery-$pin
go=${GO:-go}

if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
tmp=$out.tmp.$$
scratch=$(mktemp -d)
trap 'rm -rf "$tmp" "$scratch"' EXIT INT TERM

start=$(date +%s)
echo "building pilot-discovery (istio.io/istio@$pin) into $out (15 to 40 minutes the first time, depending on how busy the cores are)" >&2
log=$cache/pilot-discovery-$pin.log
(
	cd "$scratch"
	"$go" mod init federate.local/pilot-discovery >"$log" 2>&1
	echo "  downloading istio.io/istio@$pin and its dependencies" >&2
	# Getting the command's package (not only the module) records every go.sum
	# entry the build needs.
	"$go" get "istio.io/istio/pilot/cmd/pilot-discovery@$pin" >>"$log" 2>&1
	# Progress: a line every 100 packages; the full output goes to the log.
	"$go" build -v -trimpath -ldflags='-s -w' -o "$tmp" istio.io/istio/pilot/cmd/pilot-discovery 2>&1 | tee -a "$log" |
		awk '{ n++; if (n % 100 == 0) { printf "  %d packages compiled, now %s\n", n, $0; fflush() } }' >&2
) || true
if [ ! -x "$tmp" ]; then
	tail -n 30 "$log" >&2
	echo "pilot-discovery build failed (full output in $log): run 'sh scripts/pilot-discovery.sh' again after fixing the error above" >&2
	exit 1
fi
mv -f "$tmp" "$out"
trap - EXIT INT TERM
rm -rf "$scratch"
echo "built pilot-discovery in $(($(date +%s) - start))s" >&2
echo "$out"
