package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcsinformers "sigs.k8s.io/mcs-api/pkg/client/informers/externalversions"

	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/registry"
)

// Labels and defaults the source reads and writes.
const (
	// NetworkLabel on a Namespace names the network of its endpoints.
	NetworkLabel = "topology.istio.io/network"
	// Node labels that make up an endpoint's locality.
	RegionLabel  = "topology.kubernetes.io/region"
	ZoneLabel    = "topology.kubernetes.io/zone"
	SubzoneLabel = "topology.istio.io/subzone"
	// ManagedByLabel marks the objects the control plane writes, so that it
	// never changes or deletes anyone else's.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "federate"
	// DefaultDomainSuffix is the cluster DNS domain of service hostnames.
	DefaultDomainSuffix = "cluster.local"
	// DefaultRetry bounds the first wait before a failed write is tried
	// again.
	DefaultRetry = time.Second
	// maxRetry bounds the waits while writes keep failing.
	maxRetry = 30 * time.Second
)

// Config configures a Source.
type Config struct {
	// Cluster is this cluster's name in the federation.
	Cluster string
	// Kube reaches the cluster's API server.
	Kube *rest.Config
	// Network is the network of endpoints whose namespace names none.
	Network string
	// Locality is the locality of endpoints whose node has no topology labels.
	Locality *registry.Locality
	// TrustDomain is the trust domain of the endpoints' SPIFFE IDs.
	TrustDomain string
	// DomainSuffix is the cluster DNS domain (default cluster.local).
	DomainSuffix string
	// Retry bounds the first wait before failed writes are retried
	// (default DefaultRetry); the bound doubles up to 30 s while they keep
	// failing, and each wait is jittered within the upper half of it.
	Retry time.Duration
	// OnRequestedImports, if set, receives the hostnames that the
	// cluster's unmanaged ServiceImports name (requests.go) after the
	// informers synced and whenever they change; it runs on Run's
	// goroutine. The source then leaves those ServiceImports alone quietly.
	OnRequestedImports func(hosts []string)
	// OnIstioImports, if set, receives the hostnames that the cluster's
	// Istio Sidecars and its Services' and ServiceEntries' exportTo name
	// (istioimports.go) after the informers synced and whenever they
	// change; it runs on Run's goroutine. The source then also watches
	// Sidecars, which the cluster must serve.
	OnIstioImports func(hosts []string)
	// Logger receives the source's reports; nil means slog.Default().
	Logger *slog.Logger
}

// RemoteCluster is what another cluster exports, as the federation knows it.
type RemoteCluster struct {
	Name     string
	Network  string
	Gateways []*registry.Gateway
	Services []*registry.Service
}

// Source watches one cluster's API and writes back to it.
type Source struct {
	cfg   Config
	log   *slog.Logger
	td    spiffeid.TrustDomain
	kube  kubernetes.Interface
	mcs   mcsclient.Interface
	istio istioclient.Interface
	kick  chan struct{} // something changed: recompute

	mu        sync.Mutex // guards the fields below
	remote    []RemoteCluster
	remoteSet bool // SetRemote was called: imports may be reconciled
	listers   *listers
	synced    chan struct{}
	selectors map[string]registry.WorkloadSelector // by hostname, of the services last published
}

// New checks cfg and makes the clients; it does no I/O.
func New(cfg Config) (*Source, error) {
	if err := registry.ValidClusterName(cfg.Cluster); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	if cfg.Kube == nil {
		return nil, errors.New("kube: Config.Kube is nil: pass the cluster's client configuration (--kubeconfig or in-cluster)")
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("kube: Config.TrustDomain %q: %w", cfg.TrustDomain, err)
	}
	if cfg.DomainSuffix == "" {
		cfg.DomainSuffix = DefaultDomainSuffix
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	s := &Source{cfg: cfg, log: cfg.Logger, td: td, kick: make(chan struct{}, 1), synced: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("cluster", cfg.Cluster, "kube", cfg.Kube.Host)
	if s.kube, err = kubernetes.NewForConfig(cfg.Kube); err != nil {
		return nil, fmt.Errorf("kube: client for %s: %w", cfg.Kube.Host, err)
	}
	if s.mcs, err = mcsclient.NewForConfig(cfg.Kube); err != nil {
		return nil, fmt.Errorf("kube: MCS client for %s: %w", cfg.Kube.Host, err)
	}
	if s.istio, err = istioclient.NewForConfig(cfg.Kube); err != nil {
		return nil, fmt.Errorf("kube: Istio client for %s: %w", cfg.Kube.Host, err)
	}
	return s, nil
}

// Synced is closed once the informers have synced and the first set of
// services was handed to onChange.
func (s *Source) Synced() <-chan struct{} { return s.synced }

// SetRemote gives the source every other cluster's exports. Until the first
// call, the source leaves existing ServiceImports alone, so that a control
// plane that is still loading its remote state withdraws nothing.
func (s *Source) SetRemote(remote []RemoteCluster) {
	cp := make([]RemoteCluster, len(remote))
	for i, r := range remote {
		cp[i] = RemoteCluster{Name: r.Name, Network: r.Network, Gateways: cloneAll(r.Gateways), Services: cloneAll(r.Services)}
	}
	slices.SortFunc(cp, func(a, b RemoteCluster) int { return cmp.Compare(a.Name, b.Name) })
	s.mu.Lock()
	s.remote, s.remoteSet = cp, true
	s.mu.Unlock()
	s.signal()
}

func (s *Source) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run checks that the cluster serves the APIs the source needs, starts the
// informers, calls onChange with the exported services once they synced
// and again whenever they change, and keeps the cluster's ServiceExport
// conditions and ServiceImports current. onChange runs on Run's goroutine
// and owns the slice it is given.
//
// While the API server is unreachable the informers retry and the last
// known services stay in force: an outage never withdraws an export. Run
// returns nil when ctx is cancelled.
func (s *Source) Run(ctx context.Context, onChange func([]*registry.Service)) error {
	if ctx.Err() != nil {
		return nil
	}
	if err := s.checkAPIs(ctx); err != nil {
		return err
	}
	kf := informers.NewSharedInformerFactory(s.kube, 0)
	mf := mcsinformers.NewSharedInformerFactory(s.mcs, 0)
	inf := istioinformers.NewSharedInformerFactory(s.istio, 0)
	l := &listers{
		services:       kf.Core().V1().Services().Lister(),
		slices:         kf.Discovery().V1().EndpointSlices().Lister(),
		namespaces:     kf.Core().V1().Namespaces().Lister(),
		nodes:          kf.Core().V1().Nodes().Lister(),
		exports:        mf.Multicluster().V1beta1().ServiceExports().Lister(),
		imports:        mf.Multicluster().V1beta1().ServiceImports().Lister(),
		entries:        inf.Networking().V1().WorkloadEntries().Lister(),
		serviceEntries: inf.Networking().V1().ServiceEntries().Lister(),
		groups:         inf.Networking().V1().WorkloadGroups().Lister(),
		destinations:   inf.Networking().V1().DestinationRules().Lister(),
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.signal() },
		UpdateFunc: func(any, any) { s.signal() },
		DeleteFunc: func(any) { s.signal() },
	}
	informers := []cache.SharedIndexInformer{
		kf.Core().V1().Services().Informer(), kf.Discovery().V1().EndpointSlices().Informer(),
		kf.Core().V1().Namespaces().Informer(), kf.Core().V1().Nodes().Informer(),
		mf.Multicluster().V1beta1().ServiceExports().Informer(), mf.Multicluster().V1beta1().ServiceImports().Informer(),
		inf.Networking().V1().WorkloadEntries().Informer(), inf.Networking().V1().WorkloadGroups().Informer(),
		inf.Networking().V1().DestinationRules().Informer(), inf.Networking().V1().ServiceEntries().Informer(),
	}
	if s.cfg.OnIstioImports != nil {
		l.sidecars = inf.Networking().V1().Sidecars().Lister()
		informers = append(informers, inf.Networking().V1().Sidecars().Informer())
	}
	for _, i := range informers {
		if _, err := i.AddEventHandler(handler); err != nil {
			return fmt.Errorf("kube: informer: %w", err)
		}
	}
	stop := make(chan struct{})
	defer func() {
		close(stop)
		// Shutdown waits for the informers' goroutines.
		kf.Shutdown()
		mf.Shutdown()
		inf.Shutdown()
	}()
	kf.Start(stop)
	mf.Start(stop)
	inf.Start(stop)
	for name, ok := range map[string]bool{
		"Kubernetes": allSynced(kf.WaitForCacheSync(ctx.Done())),
		"MCS":        allSynced(mf.WaitForCacheSync(ctx.Done())),
		"Istio":      allSynced(inf.WaitForCacheSync(ctx.Done())),
	} {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kube: %s informers did not sync with %s", name, s.cfg.Kube.Host)
		}
	}
	s.mu.Lock()
	s.listers = l
	s.mu.Unlock()
	return s.loop(ctx, l, onChange)
}

func allSynced[K comparable](m map[K]bool) bool {
	for _, ok := range m {
		if !ok {
			return false
		}
	}
	return true
}

// WorkloadSelectors returns, by hostname, how each service last published
// picks its workloads: by its Service's selector or its ServiceEntry's
// workloadSelector. Callers must not change them.
func (s *Source) WorkloadSelectors() map[string]registry.WorkloadSelector {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.selectors
}

func workloadSelectors(verdicts map[string]verdict) map[string]registry.WorkloadSelector {
	out := make(map[string]registry.WorkloadSelector)
	for _, v := range verdicts {
		if v.valid && len(v.selector.Labels) > 0 {
			out[v.service.GetHostname()] = v.selector
		}
	}
	return out
}

func sameSelector(a, b registry.WorkloadSelector) bool {
	return maps.Equal(a.Labels, b.Labels) && maps.Equal(a.TargetPorts, b.TargetPorts)
}

// loop recomputes after every change and retries failed writes.
func (s *Source) loop(ctx context.Context, l *listers, onChange func([]*registry.Service)) error {
	var published []*registry.Service
	var selected map[string]registry.WorkloadSelector
	var requests, istioImports []string
	first := true
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	// Jittered: the control planes of many clusters may lose the same API
	// server, or one write may race another replica's.
	backoff := retry.New(s.cfg.Retry, maxRetry)
	for {
		services, verdicts := s.build(l)
		selectors := workloadSelectors(verdicts)
		if first || !equal(published, services) || !maps.EqualFunc(selected, selectors, sameSelector) {
			published, selected = services, selectors
			s.mu.Lock()
			s.selectors = selectors
			s.mu.Unlock()
			s.log.Info("kube registry: exported services", "services", len(services))
			onChange(cloneAll(services))
		}
		requests = s.reportRequested(l, requests, first)
		istioImports = s.reportIstio(l, istioImports, first)
		if first {
			first = false
			close(s.synced)
		}
		s.mu.Lock()
		remote, remoteSet := s.remote, s.remoteSet
		s.mu.Unlock()
		err := s.writeExportStatus(ctx, l, verdicts, services, remote)
		if remoteSet {
			err = errors.Join(err, s.reconcileImports(ctx, l, services, remote))
		}
		if err != nil && ctx.Err() == nil {
			level := slog.LevelWarn
			if raced(err) {
				level = slog.LevelDebug // our cache was behind our own write
			}
			wait := backoff.Next()
			s.log.Log(ctx, level, "kube registry: cannot write to the cluster; retrying", "in", wait, "err", err)
			retryTimer.Reset(wait)
		} else {
			backoff.Reset()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-retryTimer.C:
		}
	}
}

func equal(a, b []*registry.Service) bool {
	return slices.EqualFunc(a, b, func(x, y *registry.Service) bool { return proto.Equal(x, y) })
}

func cloneAll[T proto.Message](in []T) []T {
	out := make([]T, len(in))
	for i, m := range in {
		out[i] = proto.CloneOf(m)
	}
	return out
}

// DestinationRules returns the cluster's Istio DestinationRules, sorted by
// namespace and name, for the locality and outlier policies; nil before
// the informers synced.
func (s *Source) DestinationRules() []*networkingv1.DestinationRule {
	s.mu.Lock()
	l := s.listers
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	drs, _ := l.destinations.List(labels.Everything())
	slices.SortFunc(drs, func(a, b *networkingv1.DestinationRule) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return drs
}

// raced reports whether every error of err is a write that lost to a newer
// version of the object, which the next round, with a current cache, fixes.
func raced(err error) bool {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if !raced(e) {
				return false
			}
		}
		return true
	}
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}
