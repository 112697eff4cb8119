#!/bin/sh
# Builds one of the real servers the tests run, once per pinned version, into a
# cache directory outside the repository, and prints the binary's path. A
# finished binary is reused.
#
#   sh scripts/build-server.sh kube-apiserver|spire-server|pilot-discovery VERSION
#
# The kube-apiserver builds from the module in internal/tools/kube-apiserver
# (Kubernetes needs replace directives); SPIRE and Istio build from a scratch
# module in a temporary directory, so that their dependencies never enter
# federate's go.mod.
set -eu

name=$1
version=$2
case $name in
kube-apiserver)
	pkg=. minutes="10 to 20" ;;
spire-server)
	pkg=github.com/spiffe/spire/cmd/spire-server minutes="10 to 25" ;;
pilot-discovery)
	pkg=istio.io/istio/pilot/cmd/pilot-discovery minutes="15 to 40" ;;
*)
	echo "build-server: unknown server $name: kube-apiserver, spire-server or pilot-discovery" >&2
	exit 2 ;;
esac

go=${GO:-go}
cache=${FEDERATE_CACHE:-$HOME/.cache/federate}
out=$cache/$name-$version
if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
tmp=$out.tmp.$$
scratch=$(mktemp -d)
trap 'rm -f "$tmp"; rm -rf "$scratch"' EXIT INT TERM
log=$cache/$name-$version.log
start=$(date +%s)
echo "$name: building $version into $out ($minutes minutes the first time, depending on how busy the cores are)" >&2
(
	if [ "$name" = kube-apiserver ]; then
		cd "$(dirname "$0")/../internal/tools/kube-apiserver"
		: >"$log"
	else
		cd "$scratch"
		"$go" mod init "federate.local/$name" >"$log" 2>&1
		echo "$name: downloading $pkg@$version and its dependencies" >&2
		# Getting the command's package (not only its module) records every
		# go.sum entry the build needs.
		"$go" get "$pkg@$version" >>"$log" 2>&1
	fi
	# Progress: a line every 100 packages; the full output goes to the log.
	"$go" build -v -trimpath -ldflags='-s -w' -o "$tmp" "$pkg" 2>&1 | tee -a "$log" |
		awk -v name="$name" '{ n++; if (n % 100 == 0) { printf "%s: %d packages compiled, now %s\n", name, n, $0; fflush() } }' >&2
) || true
if [ ! -x "$tmp" ]; then
	tail -n 30 "$log" >&2
	echo "$name: build failed (full output in $log): fix the error above, then run 'sh scripts/build-server.sh $name $version' again" >&2
	exit 1
fi
mv -f "$tmp" "$out"
echo "$name: built in $(($(date +%s) - start))s" >&2
echo "$out"
