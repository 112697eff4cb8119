// Package packages builds the VM agent's .deb and .rpm with nfpm: the
// binary, a hardened systemd unit, the maintainer scripts that create the
// agent's system user, and /etc/federate files that upgrades keep.
package packages
