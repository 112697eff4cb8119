#!/bin/sh
# Stops and disables the agent before its files go. The user, its state
# and /etc/federate stay until a purge (postremove), so that a reinstall
# finds its identity and configuration.
set -e

# deb passes "remove" (or "upgrade" when replaced); rpm passes 0 on removal
# and 1 when an upgrade replaces the package.
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	if command -v deb-systemd-invoke >/dev/null; then
		deb-systemd-invoke stop federate-agent.service || true
		deb-systemd-helper disable federate-agent.service || true
	else
		# The rpm families, as their %systemd_preun does.
		systemctl disable --now federate-agent.service || true
	fi
fi
exit 0
