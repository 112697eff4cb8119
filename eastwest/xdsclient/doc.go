// Package xdsclient is the gateway's half of xDS: an ADS client that
// validates what its control plane sends, NACKs what does not, keeps the
// last good routing table, and picks endpoints with the locality math the
// control plane used.
package xdsclient
