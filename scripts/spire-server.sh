#!/bin/sh
# Builds the real spire-server that the SPIRE federation tests run, once per version, into a
# cache directory outside the repository, and prints the binary's path. A finished binary
# is reused. The build uses a scratch module in a temporary directory so that SPIRE's
# dependencies never enter federate's go.mod. It compiles about 1,600 packages: 50 minutes
# measured at nice 10 on two cores shared with other builds and tests; packages it shares
# with the kube-apiserver build come from the Go build cache.
set -eu

version=v1.13.3
cache=${FEDERATE_CACHE:-$HOME/.cache/federate}
out=$cache/spire-server-$version

if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
tmp=$out.tmp.$$
scratch=$(mktemp -d)
trap 'rm -f "$tmp"; rm -rf "$scratch"' EXIT INT TERM

start=$(date +%s)
echo "building spire-server $version into $out (about 1,600 packages; 50 minutes measured on two busy cores)" >&2
log=$cache/spire-server-$version.log
(
	cd "$scratch"
	${GO:-go} mod init federate.local/spire-server-build >/dev/null 2>&1
	echo "  resolving github.com/spiffe/spire $version" >&2
	${GO:-go} get -tool "github.com/spiffe/spire/cmd/spire-server@$version" >"$log" 2>&1
	# Progress: a line every 100 packages; the full output goes to the log.
	${GO:-go} build -v -trimpath -ldflags='-s -w' -o "$tmp" github.com/spiffe/spire/cmd/spire-server 2>&1 | tee -a "$log" |
		awk '{ n++; if (n % 100 == 0) { printf "  %d packages compiled, now %s\n", n, $0; fflush() } }' >&2
) || true
if [ ! -x "$tmp" ]; then
	tail -n 30 "$log" >&2
	echo "spire-server build failed (full output in $log): rerun 'sh scripts/spire-server.sh' and read the log" >&2
	exit 1
fi
mv -f "$tmp" "$out"
trap - EXIT INT TERM
rm -rf "$scratch"
echo "built spire-server in $(($(date +%s) - start))s" >&2
echo "$out"
