#!/bin/sh
# Builds the real kube-apiserver that the Kubernetes tests run, once per version, into a
# cache directory outside the repository, and prints the binary's path. A finished binary
# is reused; a build takes 15 to 20 minutes on two cores.
set -eu

version=v1.37.2
cache=${FEDERATE_CACHE:-$HOME/.cache/federate}
out=$cache/kube-apiserver-$version
src=$(cd "$(dirname "$0")/../internal/tools/kube-apiserver" && pwd)

if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT INT TERM

start=$(date +%s)
echo "building kube-apiserver $version into $out (15 to 20 minutes the first time)" >&2
log=$cache/kube-apiserver-$version.log
(
	cd "$src"
	# Progress: a line every 100 packages; the full output goes to the log.
	${GO:-go} build -v -trimpath -o "$tmp" . 2>&1 | tee "$log" |
		awk '{ n++; if (n % 100 == 0) { printf "  %d packages compiled, now %s\n", n, $0; fflush() } }' >&2
)
if [ ! -x "$tmp" ]; then
	tail -n 30 "$log" >&2
	echo "kube-apiserver build failed (full output in $log): run 'cd $src && go build .' to see the error" >&2
	exit 1
fi
mv -f "$tmp" "$out"
trap - EXIT INT TERM
echo "built kube-apiserver in $(($(date +%s) - start))s" >&2
echo "$out"
