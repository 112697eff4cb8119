// Package member is a cluster's part in the federation, run by its control
// plane: it signs and publishes the cluster's slice and bundle, keeps every
// other slice current from the hub's stream or, while the hub is away,
// from peers found by gossip, persists what it learned in bbolt and serves
// it at once after a restart. It also runs the cluster's CA (certificate
// requests, root rotation) and answers peers' fetches and status calls.
package member
