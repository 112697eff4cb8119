#!/bin/sh
# Creates the agent's system user (sysusers.d), and gives it its state
# directory and read access to /etc/federate (tmpfiles.d), as Debian's
# dh_installsysusers and dh_installtmpfiles and Fedora's macros do. It
# honours DPKG_ROOT, so the package also installs into another root
# directory (dpkg --root DIR --force-script-chrootless).
set -e

root="${DPKG_ROOT:-}"

# deb passes "configure [old-version]"; rpm passes 1 (install) or 2 (upgrade).
case "$1" in
configure) upgrade="${2:-}" ;;
1) upgrade= ;;
2) upgrade=yes ;;
*) exit 0 ;;
esac

systemd-sysusers ${root:+--root="$root"} federate-agent.conf
# Files copied into /etc/federate before the package was installed get
# the group and mode that 'install -m 0640 -g federate-agent' gives them.
systemd-tmpfiles ${root:+--root="$root"} --create federate-agent.conf

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	if [ -n "$upgrade" ]; then
		# Debian's wrapper honours policy-rc.d; the rpm families restart
		# as their %systemd_postun_with_restart does.
		if command -v deb-systemd-invoke >/dev/null; then
			deb-systemd-invoke restart federate-agent.service
		else
			systemctl try-restart federate-agent.service
		fi
	else
		echo "federate-agent: install the files 'federate vm configure' wrote into /etc/federate:"
		echo "  install -m 0640 -g federate-agent DIR/* /etc/federate/"
		echo "then run: systemctl enable --now federate-agent"
	fi
fi
exit 0
