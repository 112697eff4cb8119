package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
	"github.com/federate/federate/trust"
)

// Defaults of the Kubernetes mode of 'controlplane' and 'join'.
const (
	DefaultKubeNamespace    = "federate-system"
	DefaultMembershipSecret = "federate-membership"
	DefaultGatewayService   = "eastwest-gateway"
	// credentialSyncInterval is how often a renewed credential is copied
	// into the membership Secret.
	credentialSyncInterval = 5 * time.Second
)

// membershipFiles are the files 'federate join' writes, kept as the keys
// of the membership Secret.
var membershipFiles = []string{hub.MembershipFile, hub.CredentialFile, hub.CAFile}

// kubeFlags select the Kubernetes mode: services from the cluster's API,
// the membership in a Secret.
type kubeFlags struct {
	kubeconfig     string
	inCluster      bool
	namespace      string
	secret         string
	gatewayService string

	config *rest.Config // set by prepare
	client kubernetes.Interface
}

func (k *kubeFlags) register(fs *flag.FlagSet, controlPlane bool) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster: keep the membership in a Secret there"+
		map[bool]string{true: ", and take services from its ServiceExports instead of --config-dir", false: ""}[controlPlane])
	fs.BoolVar(&k.inCluster, "in-cluster", false, "like --kubeconfig, with the Pod's ServiceAccount")
	fs.StringVar(&k.namespace, "kube-namespace", DefaultKubeNamespace, "namespace of the membership Secret"+
		map[bool]string{true: " and the gateway Service", false: ""}[controlPlane])
	fs.StringVar(&k.secret, "membership-secret", DefaultMembershipSecret, "name of the Secret that holds the cluster credential")
	if controlPlane {
		fs.StringVar(&k.gatewayService, "gateway-service", DefaultGatewayService, "with --kubeconfig and no --gateway: the LoadBalancer Service whose address is announced as this cluster's gateway")
	}
}

func (k *kubeFlags) enabled() bool { return k.kubeconfig != "" || k.inCluster }

// connect builds the client from --kubeconfig or the in-cluster config.
func (k *kubeFlags) connect() error {
	if k.kubeconfig != "" && k.inCluster {
		return errors.New("--kubeconfig and --in-cluster exclude each other: pick one")
	}
	var err error
	if k.inCluster {
		k.config, err = rest.InClusterConfig()
		if err != nil {
			return fmt.Errorf("--in-cluster: %w (outside a Pod, use --kubeconfig)", err)
		}
	} else {
		k.config, err = clientcmd.BuildConfigFromFlags("", k.kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig %s: %w", k.kubeconfig, err)
		}
	}
	k.client, err = kubernetes.NewForConfig(k.config)
	return err
}

func (k *kubeFlags) secretRef() string { return k.namespace + "/" + k.secret }

// saveMembership writes what 'federate join' learnt into the Secret,
// creating or replacing it.
func (k *kubeFlags) saveMembership(ctx context.Context, ms *hub.Membership) error {
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
	secrets := k.client.CoreV1().Secrets(k.namespace)
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: k.secret, Namespace: k.namespace, Labels: map[string]string{kube.ManagedByLabel: kube.ManagedBy}},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	cur, err := secrets.Get(ctx, k.secret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		cur.Data, cur.Labels = data, want.Labels
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("save the membership in Secret %s: namespace %s does not exist: create it (kubectl apply -k deploy/controlplane)", k.secretRef(), k.namespace)
	}
	if err != nil {
		return fmt.Errorf("save the membership in Secret %s: %w", k.secretRef(), err)
	}
	return nil
}

// restoreMembership waits for the membership Secret, checks it, and writes
// its files into dataDir, where hub.LoadMembership reads them.
func (k *kubeFlags) restoreMembership(ctx context.Context, dataDir string, stderr io.Writer) error {
	waiting := false
	var sec *corev1.Secret
	for {
		var err error
		sec, err = k.client.CoreV1().Secrets(k.namespace).Get(ctx, k.secret, metav1.GetOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read the membership Secret %s: %w", k.secretRef(), err)
		}
		if !waiting {
			waiting = true
			fmt.Fprintf(stderr, "Waiting for Secret %s: join this cluster with 'federate join --token TOKEN --kubeconfig F'.\n", k.secretRef())
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
	if _, err := trust.LoadCredential(filepath.Join(dir, hub.CredentialFile)); err != nil {
		return fmt.Errorf("key %s: %w", hub.CredentialFile, err)
	}
	if _, err := hub.LoadMembership(dir); err != nil {
		return err
	}
	return nil
}

// gatewayAddress waits for the LoadBalancer address of the gateway
// Service and returns it with the Service's TLS port.
func (k *kubeFlags) gatewayAddress(ctx context.Context, stderr io.Writer) (string, error) {
	waiting := false
	for {
		svc, err := k.client.CoreV1().Services(k.namespace).Get(ctx, k.gatewayService, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("gateway Service %s/%s: %w", k.namespace, k.gatewayService, err)
		}
		if err == nil {
			if addr := loadBalancerAddress(svc); addr != "" {
				return addr, nil
			}
		}
		if !waiting {
			waiting = true
			fmt.Fprintf(stderr, "Waiting for the LoadBalancer address of Service %s/%s (or pass --gateway HOST:PORT).\n", k.namespace, k.gatewayService)
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
		if host := cmpOr(in.IP, in.Hostname); host != "" {
			return net.JoinHostPort(host, strconv.Itoa(int(port)))
		}
	}
	return ""
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// prepareKube connects, restores the membership into dataDir and finds
// the gateway address, before the control plane loads its membership.
func (k *kubeFlags) prepare(ctx context.Context, dataDir string, gateway *string, stderr io.Writer) error {
	if err := k.connect(); err != nil {
		return err
	}
	if err := k.restoreMembership(ctx, dataDir, stderr); err != nil {
		return err
	}
	if *gateway == "" {
		addr, err := k.gatewayAddress(ctx, stderr)
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
	flags    *kubeFlags
	source   *kube.Source
	member   *hub.Member
	cluster  string
	credPath string
	log      interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
}

func (k *kubeFlags) newSource(cfg kube.Config, member *hub.Member, credPath string) (*kubeSource, error) {
	cfg.Kube = k.config
	src, err := kube.New(cfg)
	if err != nil {
		return nil, err
	}
	return &kubeSource{flags: k, source: src, member: member, cluster: cfg.Cluster, credPath: credPath, log: cfg.Logger}, nil
}

// Run runs the source, the remote feed and the credential sync until ctx
// ends or one of them fails.
func (s *kubeSource) Run(ctx context.Context, onChange func([]*registry.Service)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- s.source.Run(ctx, onChange) }()
	go func() { errc <- s.feedRemote(ctx) }()
	go func() { errc <- s.syncCredential(ctx) }()
	var first error
	for range 3 {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
		cancel()
	}
	return first
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

func remoteClusters(member *hub.Member, self string) []kube.RemoteCluster {
	status := map[string]struct{ network, gateway string }{}
	for _, cs := range member.StatusNow().GetClusters() {
		status[cs.GetName()] = struct{ network, gateway string }{cs.GetNetwork(), cs.GetGateway()}
	}
	var out []kube.RemoteCluster
	for _, c := range member.Clusters() {
		if c == self {
			continue
		}
		st := status[c]
		rc := kube.RemoteCluster{Name: c, Network: st.network, Services: member.Services(c)}
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
	secrets := s.flags.client.CoreV1().Secrets(s.flags.namespace)
	t := time.NewTicker(credentialSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sec, err := secrets.Get(ctx, s.flags.secret, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("read the membership Secret", "secret", s.flags.secretRef(), "err", err)
			}
			continue
		}
		if !bytes.Equal(sec.Data[hub.CredentialFile], last) {
			return fmt.Errorf("membership Secret %s was replaced (a new 'federate join'?): restart the control plane to use it", s.flags.secretRef())
		}
		now, err := os.ReadFile(s.credPath)
		if err != nil || bytes.Equal(now, last) {
			continue
		}
		sec.Data[hub.CredentialFile] = now
		if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			s.log.Warn("save the renewed credential in the membership Secret; retrying", "secret", s.flags.secretRef(), "err", err)
			continue
		}
		last = now
		s.log.Info("saved the renewed cluster credential", "secret", s.flags.secretRef())
	}
}

// mirrorWorkloads keeps a WorkloadEntry in the cluster's API for every
// connected VM agent, as Istio's auto-registration does, and deletes the
// entries of agents that left. Changes arrive on entries; the latest set
// wins. Failures are logged and retried on the next change.
func (s *kubeSource) mirrorWorkloads(ctx context.Context, entries <-chan []hub.EntryStatus) {
	mirrored := map[kube.Workload]bool{}
	for {
		var want []hub.EntryStatus
		select {
		case <-ctx.Done():
			return
		case want = <-entries:
		}
		keep := map[kube.Workload]bool{}
		for _, e := range want {
			w := kube.Workload{Namespace: e.Namespace, Group: e.Group, Address: e.Address}
			keep[w] = true
			if mirrored[w] {
				continue
			}
			if _, err := s.source.RegisterWorkload(ctx, w); err != nil {
				s.log.Warn("write the VM's WorkloadEntry", "group", e.Namespace+"/"+e.Group, "address", e.Address, "err", err)
				continue
			}
			mirrored[w] = true
		}
		for w := range mirrored {
			if keep[w] {
				continue
			}
			if err := s.source.UnregisterWorkload(ctx, w); err != nil {
				s.log.Warn("delete the VM's WorkloadEntry", "group", w.Namespace+"/"+w.Group, "address", w.Address, "err", err)
				continue
			}
			delete(mirrored, w)
		}
	}
}
