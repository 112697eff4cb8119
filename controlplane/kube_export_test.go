package controlplane

import (
	"context"
	"log/slog"
	"time"

	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/registry/kube"
)

// MirrorWorkloads runs the Kubernetes mode's WorkloadEntry mirror of
// cluster's source on entries until ctx ends, for the external tests.
func MirrorWorkloads(ctx context.Context, src *kube.Source, cluster string, entries <-chan []workloads.EntryStatus, grace time.Duration) {
	ks := &kubeSource{source: src, cluster: cluster, log: slog.New(slog.DiscardHandler)}
	ks.mirrorWorkloads(ctx, entries, grace)
}
