#!/bin/sh
# Stops the agent before its files go. The user and /etc/federate stay, so
# that a reinstall finds its identity and configuration.
set -e

# deb passes "remove" (or "upgrade" when replaced); rpm passes 0 on removal
# and 1 when an upgrade replaces the package.
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl disable --now federate-agent.service || true
fi
exit 0
