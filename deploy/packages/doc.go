// Package packages builds the VM agent's .deb and .rpm with nfpm: the
// stripped binary, a hardened systemd unit, the agent's system user
// (sysusers.d) and directories (tmpfiles.d), maintainer scripts that
// purge them, copyright, changelog and manual page, and /etc/federate
// files that upgrades keep.
package packages
