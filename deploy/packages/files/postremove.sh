#!/bin/sh
# On purge (deb), or erase (rpm, which has no purge), removes what the
# agent leaves behind: its state directory with its SVID and private key,
# the bootstrap files in /etc/federate with the token, and its user and
# group. A plain removal (dpkg -r) keeps them, so that a reinstall finds
# its identity and configuration. It honours DPKG_ROOT.
set -e

user=federate-agent
root="${DPKG_ROOT:-}"

# deb passes "purge" after "remove"; rpm passes 0 on erase and 1 when an
# upgrade replaced the package.
case "$1" in
purge | 0) ;;
*) exit 0 ;;
esac

rm -rf "$root/var/lib/federate-agent"
for f in cluster.env mesh.yaml root-cert.pem istio-token hosts authorization.yaml; do
	rm -f "$root/etc/federate/$f"
done
# Kept if the operator left other files there.
rmdir "$root/etc/federate" 2>/dev/null || true

# userdel and groupdel exit with 6 when there is no such user or group
# (already removed by hand, or by userdel with the user's own group).
rc=0
userdel ${root:+--prefix "$root"} "$user" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 6 ] || exit "$rc"
rc=0
groupdel ${root:+--prefix "$root"} "$user" 2>/dev/null || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 6 ] || exit "$rc"
exit 0
