// Package lab runs the embedded lab: a hub and several clusters' control
// planes as local processes on loopback, joined with real tokens and serving
// a small coffee-shop registry, so the federation can be seen working on any
// Linux machine without Docker or Kubernetes.
package lab
