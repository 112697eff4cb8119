#!/bin/sh
# Creates the agent's system user and gives it its directories. It honours
# DPKG_ROOT, so the package also installs into another root directory
# (dpkg --root DIR --force-script-chrootless).
set -e

user=federate-agent
root="${DPKG_ROOT:-}"

# deb passes "configure [old-version]"; rpm passes 1 (install) or 2 (upgrade).
case "$1" in
configure) upgrade="${2:-}" ;;
1) upgrade= ;;
2) upgrade=yes ;;
*) exit 0 ;;
esac

if ! grep -q "^$user:" "$root/etc/passwd"; then
	nologin=/usr/sbin/nologin
	[ -x "$root$nologin" ] || nologin=/sbin/nologin
	useradd ${root:+--prefix "$root"} --system --user-group \
		--home-dir /var/lib/federate-agent --no-create-home \
		--shell "$nologin" --comment "federate VM agent" "$user"
fi

# Numeric IDs from the target's files: in another root, the host does not
# know the user.
uid=$(grep "^$user:" "$root/etc/passwd" | cut -d: -f3)
gid=$(grep "^$user:" "$root/etc/group" | cut -d: -f3)

install -d -m 0750 "$root/var/lib/federate-agent"
chown "$uid:$gid" "$root/var/lib/federate-agent"
# The agent reads its configuration and bootstrap files; only root writes them.
chown "0:$gid" "$root/etc/federate"
chmod 0750 "$root/etc/federate"
for f in "$root"/etc/federate/*; do
	[ -f "$f" ] && chgrp "$gid" "$f"
done

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	if [ -n "$upgrade" ]; then
		systemctl try-restart federate-agent.service
	else
		echo "federate-agent: copy the files 'federate vm configure' wrote into /etc/federate, then run"
		echo "  systemctl enable --now federate-agent"
	fi
fi
exit 0
