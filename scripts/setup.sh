#!/bin/sh
# Makes this machine ready for 'make test': checks every command the tests
# run, installs the missing ones from Debian's packages when it can (root
# with apt-get), and otherwise names everything missing in one line. The
# real servers the tests run are built afterwards by 'make servers'.
set -eu

# command:package pairs; gcc is for the race detector.
needs="gcc:gcc protoc:protobuf-compiler shellcheck:shellcheck etcd:etcd-server
ip:iproute2 flock:util-linux rpm:rpm systemd-analyze:systemd dpkg-deb:dpkg lintian:lintian git:git"

missing=
for need in $needs; do
	command -v "${need%%:*}" >/dev/null 2>&1 || missing="$missing ${need#*:}"
done
if [ -z "$missing" ]; then
	echo "setup: every command the tests run is installed"
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "setup: the tests need these packages, which are missing: apt-get install$missing (as root), then run make test again" >&2
	exit 1
fi
echo "setup: installing from Debian's packages:$missing"
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
echo "setup: installed$missing"
