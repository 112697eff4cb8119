package istiod

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/registry/kube"
)

// DefaultNamespace holds the gateway Services unless Config says otherwise.
const DefaultNamespace = "federate-system"

// A failed write waits under retryFirst before the next attempt when
// nothing changes meanwhile, then twice as long after each failure, up to
// under retryMax.
const (
	retryFirst = 5 * time.Second
	retryMax   = time.Minute
)

// View is the federation as the writer needs it: the other clusters, and a
// channel closed at their next change.
type View interface {
	Changed() <-chan struct{}
	Remotes() []Remote
	// Roots are the roots of federate's own trust bundle.
	Roots() []*x509.Certificate
}

// Config configures a Writer.
type Config struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
	// Namespace holds the gateway Services (default DefaultNamespace); it
	// must be one that istiod watches.
	Namespace string
	Logger    *slog.Logger
}

// Writer keeps istiod's view of the other clusters in the cluster's API.
type Writer struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg; it does no I/O.
func New(cfg Config) (*Writer, error) {
	if cfg.Kube == nil || cfg.Istio == nil {
		return nil, errors.New("istiod: a Kubernetes and an Istio client are required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Writer{cfg: cfg, log: cfg.Logger}, nil
}

// Run writes what istiod needs after every change of view until ctx ends;
// a failed write is retried. It returns nil when ctx ends.
func (w *Writer) Run(ctx context.Context, view View) error {
	lastTrust := ""
	backoff := retry.New(retryFirst, retryMax)
	for {
		changed := view.Changed()
		if err := w.CheckTrust(ctx, view.Roots()); fmt.Sprint(err) != lastTrust && ctx.Err() == nil {
			lastTrust = fmt.Sprint(err)
			if err != nil {
				w.log.Error("istiod: sidecars and federate do not trust each other", "err", err)
			} else {
				w.log.Info("istiod: sidecars trust federate's root (or istiod has not published its root yet)")
			}
		}
		if err := w.Reconcile(ctx, view.Remotes()); err != nil && ctx.Err() == nil {
			wait := backoff.Next()
			w.log.Warn("istiod: write the remote services for istiod; retrying", "retry_in", wait, "err", err)
			if !retry.Sleep(ctx, wait, changed) {
				return nil
			}
			continue
		}
		backoff.Reset()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// selector picks what this package wrote, and nothing else.
func selector() metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: kube.ManagedByLabel + "=" + kube.ManagedBy + "," + WrittenForLabel + "=" + writtenFor}
}

// Reconcile makes the cluster's gateway Services, ServiceEntries and
// WorkloadEntries match remotes: it creates and updates what is missing
// or stale and deletes what it wrote that remotes no longer need. An
// object of the same name without federate's labels is left alone.
func (w *Writer) Reconcile(ctx context.Context, remotes []Remote) error {
	want := build(remotes, w.cfg.Namespace)
	errs := []error{
		w.syncGateways(ctx, want),
		w.syncServiceEntries(ctx, want),
		w.syncWorkloadEntries(ctx, want),
	}
	return errors.Join(errs...)
}

// foreign reports an object of the wanted name that federate does not own.
func (w *Writer) foreign(kind, ns, name string) error {
	w.log.Warn("istiod: an object that federate does not manage is in the way; leaving it alone", "kind", kind, "object", ns+"/"+name)
	return nil
}

// namespaceMissing skips an object whose namespace this cluster lacks:
// namespace sameness, a service is imported only where its namespace is.
func namespaceMissing(err error) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Details != nil {
		return status.Status().Details.Kind == "namespaces"
	}
	return false
}

func wrap(verb, kind, ns, name string, err error) error {
	if err == nil || apierrors.IsNotFound(err) && verb == "delete" {
		return nil
	}
	return fmt.Errorf("istiod: %s %s %s/%s: %w", verb, kind, ns, name, err)
}
