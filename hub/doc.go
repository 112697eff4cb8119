// Package hub is the federation hub: it admits clusters with one-time join
// tokens and issues their credentials, verifies, persists and relays every
// cluster's signed slice to subscribers, serves each member's SPIFFE bundle
// at a bundle endpoint, imports external trust domains, and removes
// clusters. The API is in hubpb.
package hub
