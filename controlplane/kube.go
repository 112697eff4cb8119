package controlplane

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Defaults of the Kubernetes mode.
const (
	DefaultKubeNamespace    = "federate-system"
	DefaultMembershipSecret = "federate-membership"
	DefaultGatewayService   = "eastwest-gateway"
	// credentialSyncInterval is how often a renewed credential is copied
	// into the membership Secret.
	credentialSyncInterval = 5 * time.Second
)

// Kube is the Kubernetes mode of a control plane: services from the
// cluster's API, the membership in a Secret there, and the gateway's
// address from its LoadBalancer Service.
type Kube struct {
	Config *rest.Config
	Client kubernetes.Interface
	// Namespace holds the membership Secret and the gateway Service.
	Namespace string
	// Secret is the membership Secret's name.
	Secret string
	// GatewayService is the LoadBalancer Service whose address is announced
	// when Config.Gateway is empty.
	GatewayService string
	// GatewaySecret is the Secret the control plane keeps with the east-west
	// gateway's SVID and the mesh CA (default DefaultGatewaySecret).
	GatewaySecret string
	// PodName, if set, is this replica's Pod in Namespace: under leader
	// election the control plane labels it with its role (RoleLabel).
	PodName string
}

// membershipFiles are the files 'federate join' writes, kept as the keys
// of the membership Secret.
var membershipFiles = []string{membership.MembershipFile, membership.CredentialFile, membership.CAFile}

func (k *Kube) secretRef() string { return k.Namespace + "/" + k.Secret }

// SaveMembership writes what 'federate join' learnt into the Secret,
// creating or replacing it.
func (k *Kube) SaveMembership(ctx context.Context, ms *membership.Membership) error {
	dir, err := os.MkdirTemp("", "federate-join-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := ms.Save(dir); err != nil {
		return err
	}
	data := map[string][]byte{}
	for _, f := range membershipFiles {
		if data[f], err = os.ReadFile(filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	secrets := k.Client.CoreV1().Secrets(k.Namespace)
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: k.Secret, Namespace: k.Namespace, Labels: map[string]string{kube.ManagedByLabel: kube.ManagedBy}},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	cur, err := secrets.Get(ctx, k.Secret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		// A new join keeps the cluster's CA: its workloads' certificates
		// stay valid.
		if ca := cur.Data[CAStateKey]; len(ca) > 0 {
			data[CAStateKey] = ca
		}
		cur.Data, cur.Labels = data, want.Labels
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("save the membership in Secret %s: namespace %s does not exist: create it (kubectl apply -k deploy/controlplane)", k.secretRef(), k.Namespace)
	}
	if err != nil {
		return fmt.Errorf("save the membership in Secret %s: %w", k.secretRef(), err)
	}
	return nil
}

// restoreMembership waits for the membership Secret, checks it, and writes
// its files into dataDir, where membership.LoadMembership reads them.
func (k *Kube) restoreMembership(ctx context.Context, dataDir string, log *slog.Logger) error {
	waiting := false
	var sec *corev1.Secret
	for {
		var err error
		sec, err = k.Client.CoreV1().Secrets(k.Namespace).Get(ctx, k.Secret, metav1.GetOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read the membership Secret %s: %w", k.secretRef(), err)
		}
		if !waiting {
			waiting = true
			log.Warn("waiting for the membership Secret: join this cluster with 'federate join --token TOKEN --kubeconfig F'", "secret", k.secretRef())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	if err := checkMembership(sec); err != nil {
		return fmt.Errorf("membership Secret %s: %w; run 'federate join --token TOKEN --kubeconfig F' again to replace it", k.secretRef(), err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	for _, f := range membershipFiles {
		if err := trust.WriteFileAtomic(filepath.Join(dataDir, f), sec.Data[f], 0o600); err != nil {
			return err
		}
	}
	return nil
}

// checkMembership makes sure a Secret holds a usable membership, so that a
// broken one is named as such rather than failing deep in the start.
func checkMembership(sec *corev1.Secret) error {
	for _, f := range membershipFiles {
		if len(sec.Data[f]) == 0 {
			return fmt.Errorf("key %s is missing or empty", f)
		}
	}
	dir, err := os.MkdirTemp("", "federate-membership-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, f := range membershipFiles {
		if err := os.WriteFile(filepath.Join(dir, f), sec.Data[f], 0o600); err != nil {
			return err
		}
	}
	if _, err := trust.LoadCredential(filepath.Join(dir, membership.CredentialFile)); err != nil {
		return fmt.Errorf("key %s: %w", membership.CredentialFile, err)
	}
	if _, err := membership.LoadMembership(dir); err != nil {
		return err
	}
	return nil
}

// gatewayAddress waits for the LoadBalancer address of the gateway
// Service and returns it with the Service's TLS port.
func (k *Kube) gatewayAddress(ctx context.Context, log *slog.Logger) (string, error) {
	waiting := false
	for {
		svc, err := k.Client.CoreV1().Services(k.Namespace).Get(ctx, k.GatewayService, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("gateway Service %s/%s: %w", k.Namespace, k.GatewayService, err)
		}
		if err == nil {
			if addr := loadBalancerAddress(svc); addr != "" {
				return addr, nil
			}
		}
		if !waiting {
			waiting = true
			log.Warn("waiting for the gateway Service's LoadBalancer address (or pass --gateway HOST:PORT)", "service", k.Namespace+"/"+k.GatewayService)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func loadBalancerAddress(svc *corev1.Service) string {
	port := int32(15443)
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.IntValue() == 15443 || p.Name == "tls" {
			port = p.Port
		}
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if host := cmp.Or(in.IP, in.Hostname); host != "" {
			return net.JoinHostPort(host, strconv.Itoa(int(port)))
		}
	}
	return ""
}

// prepare restores the membership into dataDir and finds
// the gateway address, before the control plane loads its membership.
func (k *Kube) prepare(ctx context.Context, dataDir string, gateway *string, log *slog.Logger) error {
	if err := k.restoreMembership(ctx, dataDir, log); err != nil {
		return err
	}
	if *gateway == "" {
		addr, err := k.gatewayAddress(ctx, log)
		if err != nil {
			return err
		}
		*gateway = addr
	}
	return nil
}

// kubeSource runs the Kubernetes registry with the federation's view of
// the other clusters, and keeps the membership Secret's credential current.
type kubeSource struct {
	kube     *Kube
	store    *store.Store // whose CA state is kept in the Secret, unless nil
	source   *kube.Source
	member   *member.Member
	cluster  string
	credPath string
	log      *slog.Logger
}

// kubeImports receive what the cluster's objects name to import; nil
// when not asked for.
type kubeImports struct{ requested, istio func(hosts []string) }

func (k *Kube) newSource(cfg Config, m *member.Member, st *store.Store, on kubeImports) (*kubeSource, error) {
	td := cfg.TrustDomain
	if td == "" {
		td = registry.DefaultTrustDomain(cfg.Cluster, m.Mesh())
	}
	src, err := kube.New(kube.Config{Kube: k.Config, Cluster: cfg.Cluster, Network: cfg.Network, Locality: cfg.Locality, TrustDomain: td,
		OnRequestedImports: on.requested, OnIstioImports: on.istio, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	credPath := filepath.Join(cfg.DataDir, membership.CredentialFile)
	ks := &kubeSource{kube: k, source: src, member: m, cluster: cfg.Cluster, credPath: credPath, log: cfg.Logger}
	if cfg.PluginCADir == "" {
		ks.store = st
	}
	return ks, nil
}

// Run runs the source, the remote feed and the credential sync until ctx
// ends or one of them fails.
func (s *kubeSource) Run(ctx context.Context, onChange func([]*registry.Service)) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.source.Run(ctx, onChange) })
	g.Go(func() error { return s.feedRemote(ctx) })
	g.Go(func() error { return s.syncCredential(ctx) })
	return g.Wait()
}

// feedRemote hands the source every other cluster's services after each
// change of the federation's view.
func (s *kubeSource) feedRemote(ctx context.Context) error {
	for {
		changed := s.member.Changed()
		s.source.SetRemote(remoteClusters(s.member, s.cluster))
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func remoteClusters(m *member.Member, self string) []kube.RemoteCluster {
	status := map[string]struct{ network, gateway string }{}
	for _, cs := range m.StatusNow().GetClusters() {
		status[cs.GetName()] = struct{ network, gateway string }{cs.GetNetwork(), cs.GetGateway()}
	}
	var out []kube.RemoteCluster
	for _, c := range m.Clusters() {
		if c == self {
			continue
		}
		st := status[c]
		rc := kube.RemoteCluster{Name: c, Network: st.network, Services: m.Services(c)}
		if gws, err := parseGateway(st.gateway, st.network, nil); err == nil {
			rc.Gateways = gws
		}
		out = append(out, rc)
	}
	return out
}

// syncCredential copies the credential the member renews into the
// membership Secret, and stops the control plane when someone else
// replaced the Secret (a new 'federate join'), so that it restarts with it.
func (s *kubeSource) syncCredential(ctx context.Context) error {
	last, err := os.ReadFile(s.credPath)
	if err != nil {
		return err
	}
	secrets := s.kube.Client.CoreV1().Secrets(s.kube.Namespace)
	t := time.NewTicker(credentialSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sec, err := secrets.Get(ctx, s.kube.Secret, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("read the membership Secret", "secret", s.kube.secretRef(), "err", err)
			}
			continue
		}
		if !bytes.Equal(sec.Data[membership.CredentialFile], last) {
			return fmt.Errorf("membership Secret %s was replaced (a new 'federate join'?): restart the control plane to use it", s.kube.secretRef())
		}
		now, err := os.ReadFile(s.credPath)
		renewed := err == nil && !bytes.Equal(now, last)
		if renewed {
			sec.Data[membership.CredentialFile] = now
		}
		rotated := false
		if s.store != nil {
			if rotated, err = syncCA(s.store, sec.Data); err != nil {
				s.log.Warn("read the cluster CA's state", "err", err)
			}
		}
		if !renewed && !rotated {
			continue
		}
		if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			s.log.Warn("save the renewed credential or CA in the membership Secret; retrying", "secret", s.kube.secretRef(), "err", err)
			continue
		}
		if renewed {
			last = now
			s.log.Info("saved the renewed cluster credential", "secret", s.kube.secretRef())
		}
	}
}

// mirrorWorkloads keeps a WorkloadEntry in the cluster's API for every
// connected VM agent, as Istio's auto-registration does, with the agent's
// probe result as its Healthy condition and its sidecar's inbound port as
// every port (istiod, and the source while the entry is not known here,
// route to the sidecar), and deletes the entries of agents that left. An
// entry restored after a restart, whose agent has not reconnected yet,
// counts as connected until its grace period ends, so that the object of
// an agent that does not come back is deleted then. Changes arrive on
// entries; the latest set wins. Failures are logged and retried on the
// next change.
func (s *kubeSource) mirrorWorkloads(ctx context.Context, entries <-chan []workloads.EntryStatus, grace time.Duration) {
	// What was written, by entry, with whether the health written says
	// healthy (nil until written). Adopted: written by an earlier process
	// and not wanted here since.
	type written struct {
		w       kube.Workload
		healthy *bool
		adopted bool
	}
	mirrored := map[string]*written{}
	// The objects an earlier process left (this one before a restart, a
	// replica that led before) wait a grace period for their agents to
	// connect here, as restored entries do; then those not wanted go.
	adoptUntil := time.Now().Add(grace)
	adopt := func() bool {
		left, err := s.source.RegisteredWorkloads(ctx)
		if err != nil {
			s.log.Warn("list the VMs' WorkloadEntries that an earlier control plane wrote; retrying at the next change", "err", err)
			return false
		}
		for _, w := range left {
			key := w.Namespace + "/" + workloads.EntryName(w.Group, w.Address)
			if mirrored[key] == nil {
				mirrored[key] = &written{w: w, adopted: true}
			}
		}
		return true
	}
	adopted := adopt()
	graceOver := time.NewTimer(grace)
	defer graceOver.Stop()
	var want []workloads.EntryStatus
	for {
		select {
		case <-ctx.Done():
			return
		case want = <-entries:
		case <-graceOver.C: // the latest set again, without the adopted
		}
		if !adopted {
			adopted = adopt()
		}
		keep := map[string]bool{}
		for _, e := range want {
			if !e.Connected && !e.Restored {
				continue
			}
			key := e.Namespace + "/" + e.Name
			keep[key] = true
			w := kube.Workload{Namespace: e.Namespace, Group: e.Group, Address: e.Address,
				Network: e.Network, Locality: e.Locality, Ports: e.Ports}
			m := mirrored[key]
			if m == nil || !reflect.DeepEqual(m.w, w) {
				if _, err := s.source.RegisterWorkload(ctx, w); err != nil {
					s.log.Warn("write the VM's WorkloadEntry", "group", e.Namespace+"/"+e.Group, "address", e.Address, "err", err)
					continue
				}
				if m == nil {
					m = &written{}
					mirrored[key] = m
				}
				m.w = w
			}
			m.adopted = false
			if m.healthy != nil && *m.healthy == e.Healthy {
				continue
			}
			if err := s.source.SetWorkloadHealth(ctx, w, e.Healthy, e.HealthMessage); err != nil {
				s.log.Warn("write the VM's health into its WorkloadEntry", "group", e.Namespace+"/"+e.Group, "address", e.Address, "err", err)
				continue
			}
			m.healthy = &e.Healthy
		}
		for key, m := range mirrored {
			if keep[key] || m.adopted && time.Now().Before(adoptUntil) {
				continue
			}
			if err := s.source.UnregisterWorkload(ctx, m.w); err != nil {
				s.log.Warn("delete the VM's WorkloadEntry", "group", m.w.Namespace+"/"+m.w.Group, "address", m.w.Address, "err", err)
				continue
			}
			if m.adopted {
				s.log.Info("deleted a VM's WorkloadEntry that an earlier control plane wrote: its agent did not connect within the grace period", "workloadEntry", key, "grace", grace)
			}
			delete(mirrored, key)
		}
	}
}
