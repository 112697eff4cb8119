package kube_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
)

// hostIP is this machine's address: EndpointSlices may not hold loopback ones.
var hostIP string

// federation stands in for the hub: it hands each cluster's exports to
// every other cluster's source, as the control plane's feed does.
type federation struct {
	mu      sync.Mutex
	sources map[string]*kube.Source
	exports map[string][]*registry.Service
	history map[string][][]*registry.Service // every set each source published
	port    map[string]uint32                // of each cluster's gateway, on hostIP
	down    map[string]bool                  // clusters whose updates are held back
}

func newFederation() *federation {
	return &federation{sources: map[string]*kube.Source{}, exports: map[string][]*registry.Service{},
		history: map[string][][]*registry.Service{}, port: map[string]uint32{}, down: map[string]bool{}}
}

func (f *federation) onChange(cluster string) func([]*registry.Service) {
	return func(services []*registry.Service) {
		f.mu.Lock()
		f.exports[cluster] = services
		f.history[cluster] = append(f.history[cluster], services)
		f.mu.Unlock()
		f.feed()
	}
}

func (f *federation) feed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, src := range f.sources {
		var remote []kube.RemoteCluster
		for other, services := range f.exports {
			if other == name {
				continue
			}
			remote = append(remote, kube.RemoteCluster{
				Name: other, Network: "net-" + other, Services: services,
				Gateways: []*registry.Gateway{{Address: hostIP, Port: f.port[other], Network: "net-" + other}},
			})
		}
		src.SetRemote(remote)
	}
}

func (f *federation) services(cluster string) []*registry.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exports[cluster]
}

func (f *federation) service(cluster, hostname string) *registry.Service {
	for _, s := range f.services(cluster) {
		if s.GetHostname() == hostname {
			return s
		}
	}
	return nil
}

type cluster struct {
	*kubetest.Cluster
	mcs   mcsclient.Interface
	istio istioclient.Interface
	src   *kube.Source
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startSource runs a cluster's source until the test ends.
func startSource(t *testing.T, c *cluster, f *federation) {
	t.Helper()
	src, err := kube.New(kube.Config{
		Cluster: c.Name, Kube: c.Config, Network: "net-" + c.Name, TrustDomain: c.Name + ".shop",
		Locality: &registry.Locality{Region: "region-" + c.Name}, Retry: 100 * time.Millisecond, Logger: testLogger(t).With("src", c.Name),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.src = src
	f.mu.Lock()
	f.sources[c.Name] = src
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, f.onChange(c.Name)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s source: %v", c.Name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s source did not stop within 30s", c.Name)
		}
	})
	select {
	case <-src.Synced():
	case err := <-done:
		t.Fatalf("%s source stopped: %v", c.Name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s source did not sync within 30s", c.Name)
	}
	f.feed()
}

// reportedHosts keeps the hosts a source last reported through one of
// its import callbacks.
type reportedHosts struct {
	mu    sync.Mutex
	hosts []string
}

func (r *reportedHosts) set(hosts []string) {
	r.mu.Lock()
	r.hosts = hosts
	r.mu.Unlock()
}

// are is a check for eventually: the hosts last reported are want.
func (r *reportedHosts) are(want ...string) func() string {
	return func() string {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !slices.Equal(r.hosts, want) {
			return fmt.Sprintf("reported %v, want %v", r.hosts, want)
		}
		return ""
	}
}

// runSource runs a source of cfg, discarding its services, until the
// test ends.
func runSource(ctx context.Context, t *testing.T, cfg kube.Config) {
	t.Helper()
	src, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx, func([]*registry.Service) {}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("source: %v", err)
		}
	})
}

// eventually polls check until it returns "" or the timeout passes, then
// fails with check's last complaint.
func eventually(t *testing.T, timeout time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (c *cluster) service(t *testing.T, ns, name string, ports map[string]int32, selector map[string]string) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.ServiceSpec{Selector: selector}}
	for _, pn := range slices.Sorted(func(yield func(string) bool) {
		for k := range ports {
			if !yield(k) {
				return
			}
		}
	}) {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: pn, Port: ports[pn], Protocol: corev1.ProtocolTCP})
	}
	if _, err := c.Client.CoreV1().Services(ns).Create(ctxT(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) endpointSlice(t *testing.T, ns, service, node string, port int32, addrs ...string) {
	t.Helper()
	name, proto := "http", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: service + "-local", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, NodeName: &node})
	}
	if _, err := c.Client.DiscoveryV1().EndpointSlices(ns).Create(ctxT(t), es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) export(t *testing.T, ns, name string) {
	t.Helper()
	_, err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Create(ctxT(t), &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) unexport(t *testing.T, ns, name string) {
	t.Helper()
	if err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Delete(ctxT(t), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// condition returns a ServiceExport condition as "Status/Reason: message".
func (c *cluster) condition(ns, name string, typ mcsv1beta1.ServiceExportConditionType) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	exp, err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	cond := meta.FindStatusCondition(exp.Status.Conditions, string(typ))
	if cond == nil {
		return "no " + string(typ) + " condition"
	}
	return fmt.Sprintf("%s/%s: %s", cond.Status, cond.Reason, cond.Message)
}

// imported describes a ServiceImport and its EndpointSlices, or "absent".
func (c *cluster) imported(ns, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	si, err := c.mcs.MulticlusterV1beta1().ServiceImports(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "absent"
	}
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range si.Spec.Ports {
		fmt.Fprintf(&b, "port %s %d/%s; ", p.Name, p.Port, p.Protocol)
	}
	for _, cl := range si.Status.Clusters {
		fmt.Fprintf(&b, "from %s; ", cl.Cluster)
	}
	slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: mcsv1beta1.LabelServiceName + "=" + name})
	if err != nil {
		return err.Error()
	}
	for _, es := range slices.Items {
		for _, ep := range es.Endpoints {
			fmt.Fprintf(&b, "slice %s -> %s:%d; ", es.Labels[mcsv1beta1.LabelSourceCluster], ep.Addresses[0], *es.Ports[0].Port)
		}
	}
	return strings.TrimSpace(b.String())
}

func want(got, want string) string {
	if got != want {
		return fmt.Sprintf("got %q, want %q", got, want)
	}
	return ""
}

// TestIntegrationKubernetes runs three real apiservers as three clusters,
// with a source each, joined by an in-memory federation.
func TestIntegrationKubernetes(t *testing.T) {
	kcs := kubetest.Start(t, "east", "west", "central")
	var cs []*cluster
	for _, kc := range kcs {
		c := &cluster{Cluster: kc}
		var err error
		if c.mcs, err = mcsclient.NewForConfig(kc.Config); err != nil {
			t.Fatal(err)
		}
		if c.istio, err = istioclient.NewForConfig(kc.Config); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	east, west, central := cs[0], cs[1], cs[2]
	hostIP = kubetest.HostIP(t)

	// Before its CRDs are installed, a source says what to install.
	t.Run("missing CRDs are named", func(t *testing.T) {
		src, err := kube.New(kube.Config{Cluster: "east", Kube: east.Config, Network: "n", TrustDomain: "east.shop", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		err = src.Run(ctxT(t), func([]*registry.Service) { t.Error("onChange called without the CRDs") })
		if err == nil || !strings.Contains(err.Error(), "deploy/crds/mcs") {
			t.Fatalf("Run without the MCS CRDs: %v, want an error naming deploy/crds/mcs", err)
		}
	})

	f := newFederation()
	for i, c := range cs {
		c.InstallCRDs(t)
		f.port[c.Name] = uint32(15441 + i)
		for _, ns := range []string{"shop", "ops"} {
			c.EnsureNamespace(t, ns, nil)
		}
	}
	// shop in east is on its own network; nodes carry the topology labels.
	east.EnsureNamespace(t, "shop", map[string]string{kube.NetworkLabel: "net-east-shop"})
	_, err := east.Client.CoreV1().Nodes().Create(ctxT(t), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{
		kube.RegionLabel: "eu-west", kube.ZoneLabel: "eu-west-1a", kube.SubzoneLabel: "rack-7",
	}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		startSource(t, c, f)
	}
	const orderHost = "order.shop.svc.cluster.local"

	t.Run("an exported service is imported everywhere", func(t *testing.T) {
		east.service(t, "shop", "order", map[string]int32{"http": 8080}, map[string]string{"app": "order"})
		east.endpointSlice(t, "shop", "order", "node-a", 18080, hostIP)
		if f.service("east", orderHost) != nil {
			t.Fatal("a Service without a ServiceExport was exported")
		}
		east.export(t, "shop", "order")
		eventually(t, 20*time.Second, func() string {
			if f.service("east", orderHost) == nil {
				return "east did not export order"
			}
			return ""
		})
		svc := f.service("east", orderHost)
		ep := svc.GetEndpoints()[0]
		wantEP := &registry.Endpoint{
			Address: hostIP, Ports: map[string]uint32{"http": 18080}, Network: "net-east-shop", Health: 1, Weight: 1,
			Locality: &registry.Locality{Region: "eu-west", Zone: "eu-west-1a", Subzone: "rack-7"},
			SpiffeId: "spiffe://east.shop/ns/shop/sa/default",
		}
		if !proto.Equal(ep, wantEP) {
			t.Errorf("endpoint: got %v, want %v (network from the namespace, locality from the node)", ep, wantEP)
		}
		for _, c := range []*cluster{west, central, east} {
			eventually(t, 20*time.Second, func() string {
				w := "port http 8080/TCP; from east;"
				if c != east {
					w += " slice east -> " + hostIP + ":15441;"
				}
				return want(c.imported("shop", "order"), w)
			})
		}
		eventually(t, 10*time.Second, func() string {
			for typ, w := range map[mcsv1beta1.ServiceExportConditionType]string{
				mcsv1beta1.ServiceExportConditionValid:    "True/Valid: exported as " + orderHost,
				mcsv1beta1.ServiceExportConditionReady:    "True/Exported: published to the federation as " + orderHost,
				mcsv1beta1.ServiceExportConditionConflict: "False/NoConflicts: every cluster that exports this service agrees on its ports",
			} {
				if msg := want(east.condition("shop", "order", typ), w); msg != "" {
					return msg
				}
			}
			return ""
		})
	})

	t.Run("ports that disagree set Conflict in both clusters", func(t *testing.T) {
		central.service(t, "shop", "order", map[string]int32{"http": 9090}, nil)
		central.export(t, "shop", "order")
		for _, c := range []*cluster{east, central} {
			eventually(t, 20*time.Second, func() string {
				got := c.condition("shop", "order", mcsv1beta1.ServiceExportConditionConflict)
				if !strings.HasPrefix(got, "True/PortConflict: ports differ across clusters") ||
					!strings.Contains(got, `"central" has [http 9090/HTTP]`) || !strings.Contains(got, `"east" has [http 8080/HTTP]`) {
					return c.Name + ": " + got
				}
				return ""
			})
		}
		// The first cluster by name wins, the same in every cluster.
		eventually(t, 20*time.Second, func() string {
			return want(west.imported("shop", "order"), "port http 9090/TCP; from central; from east; slice central -> "+hostIP+":15443; slice east -> "+hostIP+":15441;")
		})
		central.unexport(t, "shop", "order")
		eventually(t, 20*time.Second, func() string {
			return want(east.condition("shop", "order", mcsv1beta1.ServiceExportConditionConflict),
				"False/NoConflicts: every cluster that exports this service agrees on its ports")
		})
	})

	t.Run("a ServiceExport without its Service says so", func(t *testing.T) {
		west.export(t, "shop", "ghost")
		eventually(t, 20*time.Second, func() string {
			return want(west.condition("shop", "ghost", mcsv1beta1.ServiceExportConditionValid),
				"False/NoService: neither a Service nor an Istio ServiceEntry shop/ghost exists in this cluster: create one, or delete this ServiceExport")
		})
		if got := west.condition("shop", "ghost", mcsv1beta1.ServiceExportConditionReady); !strings.HasPrefix(got, "False/Failed") {
			t.Errorf("Ready of an invalid export: %s", got)
		}
		if got := east.imported("shop", "ghost"); got != "absent" {
			t.Errorf("an invalid export was imported: %s", got)
		}
	})

	t.Run("an exported Istio ServiceEntry and its WorkloadEntries are published", func(t *testing.T) {
		exportedServiceEntry(t, central, east, f)
	})

	t.Run("a VM's WorkloadEntry appears and joins its service", func(t *testing.T) {
		_, err := east.istio.NetworkingV1().WorkloadGroups("shop").Create(ctxT(t), &networkingv1.WorkloadGroup{
			ObjectMeta: metav1.ObjectMeta{Name: "order-vm", Namespace: "shop"},
			Spec: networkingpb.WorkloadGroup{
				Metadata: &networkingpb.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "order"}},
				Template: &networkingpb.WorkloadEntry{ServiceAccount: "order", Ports: map[string]uint32{"http": 28080}},
				Probe: &networkingpb.ReadinessProbe{HealthCheckMethod: &networkingpb.ReadinessProbe_TcpSocket{
					TcpSocket: &networkingpb.TCPHealthCheckConfig{Port: 28080}}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		we, err := east.src.RegisterWorkload(ctxT(t), kube.Workload{Namespace: "shop", Group: "order-vm", Address: "10.0.0.7", Locality: "eu-west/eu-west-1b"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := east.istio.NetworkingV1().WorkloadEntries("shop").Get(ctxT(t), "order-vm-10.0.0.7", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the VM's WorkloadEntry is not in the API: %v", err)
		}
		// A group with a probe: istiod is told to honour the Healthy
		// condition, as its own auto-registration does.
		if got.UID != we.UID || got.Annotations[kube.AutoRegistrationGroupAnnotation] != "order-vm" || got.Spec.GetAddress() != "10.0.0.7" ||
			got.Annotations["proxy.istio.io/health-checks-enabled"] != "true" ||
			len(got.OwnerReferences) != 1 || got.OwnerReferences[0].Kind != "WorkloadGroup" {
			t.Errorf("WorkloadEntry: %+v", got)
		}
		if sel := east.src.WorkloadSelectors()[orderHost]; sel.Labels["app"] != "order" {
			t.Errorf("the Service's workload selector: %v", sel)
		}
		eventually(t, 20*time.Second, func() string {
			svc := f.service("east", orderHost)
			for _, ep := range svc.GetEndpoints() {
				if ep.GetAddress() == "10.0.0.7" {
					return want(fmt.Sprint(ep.GetPorts()["http"], " ", ep.GetSpiffeId(), " ", registry.FormatLocality(ep.GetLocality())),
						"28080 spiffe://east.shop/ns/shop/sa/order eu-west/eu-west-1b")
				}
			}
			return "the VM is not an endpoint of order"
		})
		// Its probe fails: the Healthy condition makes it unhealthy, then
		// healthy again.
		vmHealth := func() string {
			for _, ep := range f.service("east", orderHost).GetEndpoints() {
				if ep.GetAddress() == "10.0.0.7" {
					return ep.GetHealth().String()
				}
			}
			return "absent"
		}
		for _, healthy := range []bool{false, true} {
			if err := east.src.SetWorkloadHealth(ctxT(t), kube.Workload{Namespace: "shop", Group: "order-vm", Address: "10.0.0.7"}, healthy, "probe"); err != nil {
				t.Fatal(err)
			}
			wantHealth := map[bool]string{true: "HEALTHY", false: "UNHEALTHY"}[healthy]
			eventually(t, 20*time.Second, func() string { return want(vmHealth(), wantHealth) })
		}
		if _, err := east.src.RegisterWorkload(ctxT(t), kube.Workload{Namespace: "shop", Group: "nope", Address: "10.0.0.8"}); err == nil ||
			!strings.Contains(err.Error(), "no such WorkloadGroup shop/nope") {
			t.Errorf("a VM of a missing group: %v", err)
		}
		if err := east.src.UnregisterWorkload(ctxT(t), kube.Workload{Namespace: "shop", Group: "order-vm", Address: "10.0.0.7"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, func() string {
			if len(f.service("east", orderHost).GetEndpoints()) != 1 {
				return "the unregistered VM is still an endpoint"
			}
			return ""
		})
	})

	t.Run("an apiserver that goes away and comes back", func(t *testing.T) {
		// west exports menu, and imports order from east.
		west.service(t, "ops", "menu", map[string]int32{"http": 8081}, nil)
		west.export(t, "ops", "menu")
		eventually(t, 20*time.Second, func() string {
			return want(east.imported("ops", "menu"), "port http 8081/TCP; from west; slice west -> "+hostIP+":15442;")
		})
		f.mu.Lock()
		before := len(f.history["west"])
		f.mu.Unlock()

		west.Stop()
		// While west is away, east exports one more service.
		east.service(t, "shop", "pay", map[string]int32{"http": 8082}, nil)
		east.export(t, "shop", "pay")
		eventually(t, 20*time.Second, func() string {
			if f.service("east", "pay.shop.svc.cluster.local") == nil {
				return "east did not export pay"
			}
			return ""
		})
		time.Sleep(2 * time.Second) // let west's informers notice the outage
		west.Restart()
		eventually(t, 60*time.Second, func() string {
			return want(west.imported("shop", "pay"), "port http 8082/TCP; from east; slice east -> "+hostIP+":15441;")
		})
		if got := west.imported("shop", "order"); got != "port http 8080/TCP; from east; slice east -> "+hostIP+":15441;" {
			t.Errorf("order in west after the outage: %s", got)
		}
		// west's exports never dropped while its apiserver was away.
		f.mu.Lock()
		for _, set := range f.history["west"][before:] {
			if !slices.ContainsFunc(set, func(s *registry.Service) bool { return s.GetHostname() == "menu.ops.svc.cluster.local" }) {
				t.Errorf("west published a set without menu during the outage: %v", set)
			}
		}
		f.mu.Unlock()
		// And a change made after the restart is seen: the informers recovered.
		west.unexport(t, "ops", "menu")
		eventually(t, 60*time.Second, func() string { return want(east.imported("ops", "menu"), "absent") })
	})

	t.Run("deleting the ServiceExport withdraws it everywhere", func(t *testing.T) {
		east.unexport(t, "shop", "order")
		for _, c := range cs {
			eventually(t, 20*time.Second, func() string { return want(c.imported("shop", "order"), "absent") })
		}
		if f.service("east", orderHost) != nil {
			t.Error("east still exports order")
		}
	})
}

// exportedServiceEntry: central's Istio ServiceEntry ledger, with the
// WorkloadEntries its selector picks, leaves the cluster
// once a ServiceExport names it, and east imports it; WorkloadEntries that
// come and go follow; a ServiceEntry federate cannot export says why in
// its ServiceExport's Valid condition.
func exportedServiceEntry(t *testing.T, central, east *cluster, f *federation) {
	const ledgerHost = "ledger.shop.svc.cluster.local"
	nw := central.istio.NetworkingV1()
	_, err := nw.ServiceEntries("shop").Create(ctxT(t), &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "ledger", Namespace: "shop"},
		Spec: networkingpb.ServiceEntry{
			Hosts: []string{ledgerHost}, Location: networkingpb.ServiceEntry_MESH_INTERNAL, Resolution: networkingpb.ServiceEntry_STATIC,
			Ports:            []*networkingpb.ServicePort{{Number: 9090, Name: "grpc", Protocol: "GRPC", TargetPort: 19090}},
			WorkloadSelector: &networkingpb.WorkloadSelector{Labels: map[string]string{"app": "ledger"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, loc := range []string{"us-east/us-east-1a", ""} {
		_, err := nw.WorkloadEntries("shop").Create(ctxT(t), &networkingv1.WorkloadEntry{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ledger-vm-%d", i+1), Namespace: "shop", Labels: map[string]string{"app": "ledger"}},
			Spec:       networkingpb.WorkloadEntry{Address: fmt.Sprintf("10.3.1.%d", i+1), Locality: loc, ServiceAccount: "ledger", Weight: uint32(2 + i)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A WorkloadEntry of another app is not picked.
	if _, err := nw.WorkloadEntries("shop").Create(ctxT(t), &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "till-vm", Namespace: "shop", Labels: map[string]string{"app": "till"}},
		Spec:       networkingpb.WorkloadEntry{Address: "10.3.2.1"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	endpoints := func() string {
		svc := f.service("central", ledgerHost)
		if svc == nil {
			return "not exported"
		}
		var b strings.Builder
		for _, ep := range svc.GetEndpoints() {
			fmt.Fprintf(&b, "%s:%d w%d %s %s %s; ", ep.GetAddress(), ep.GetPorts()["grpc"], ep.GetWeight(),
				registry.FormatLocality(ep.GetLocality()), ep.GetNetwork(), ep.GetSpiffeId())
		}
		return strings.TrimSpace(b.String())
	}
	if got := endpoints(); got != "not exported" {
		t.Fatalf("a ServiceEntry without a ServiceExport was exported: %s", got)
	}
	central.export(t, "shop", "ledger")
	id := "spiffe://central.shop/ns/shop/sa/ledger"
	eventually(t, 20*time.Second, func() string {
		return want(endpoints(), "10.3.1.1:19090 w2 us-east/us-east-1a net-central "+id+"; 10.3.1.2:19090 w3 region-central net-central "+id+";")
	})
	eventually(t, 20*time.Second, func() string {
		return want(central.condition("shop", "ledger", mcsv1beta1.ServiceExportConditionValid), "True/Valid: exported the Istio ServiceEntry as "+ledgerHost)
	})
	// VM agents' entries join it by its workloadSelector, at its targetPort.
	sel := central.src.WorkloadSelectors()[ledgerHost]
	if got := fmt.Sprint(sel.Labels, sel.TargetPorts); got != "map[app:ledger] map[grpc:19090]" {
		t.Errorf("the ServiceEntry's workload selector: %s", got)
	}
	eventually(t, 20*time.Second, func() string {
		return want(east.imported("shop", "ledger"), "port grpc 9090/TCP; from central; slice central -> "+hostIP+":15443;")
	})

	// A WorkloadEntry removed leaves the service.
	if err := nw.WorkloadEntries("shop").Delete(ctxT(t), "ledger-vm-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		return want(endpoints(), "10.3.1.2:19090 w3 region-central net-central "+id+";")
	})

	// Two hosts in one ServiceEntry: federate names one service per entry.
	_, err = nw.ServiceEntries("shop").Create(ctxT(t), &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "pair", Namespace: "shop"},
		Spec: networkingpb.ServiceEntry{Hosts: []string{"a.example.internal", "b.example.internal"}, Resolution: networkingpb.ServiceEntry_STATIC,
			Ports: []*networkingpb.ServicePort{{Number: 80, Name: "http"}}, Endpoints: []*networkingpb.WorkloadEntry{{Address: "10.3.3.1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	central.export(t, "shop", "pair")
	eventually(t, 20*time.Second, func() string {
		got := central.condition("shop", "pair", mcsv1beta1.ServiceExportConditionValid)
		if !strings.HasPrefix(got, "False/") || !strings.Contains(got, "ServiceEntry shop/pair: spec.hosts lists 2 hosts") {
			return "Valid of a two-host ServiceEntry: " + got
		}
		return ""
	})

	central.unexport(t, "shop", "ledger")
	eventually(t, 20*time.Second, func() string { return want(east.imported("shop", "ledger"), "absent") })
	if sel, ok := central.src.WorkloadSelectors()[ledgerHost]; ok {
		t.Errorf("an unexported ServiceEntry keeps its workload selector %v", sel)
	}
}
