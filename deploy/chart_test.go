package deploy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/federate/federate/internal/kubetest"
)

const chartNamespace = "federate-system"

// renderChart renders deploy/chart as 'helm template' does, with Helm's
// own loader, schema validation and engine; the manifests come out in file
// order, NOTES.txt left out.
func renderChart(t *testing.T, values map[string]any) ([]byte, error) {
	t.Helper()
	ch, err := loader.LoadDir("chart")
	if err != nil {
		t.Fatalf("load the chart: %v", err)
	}
	opts := common.ReleaseOptions{Name: "federate", Namespace: chartNamespace, Revision: 1, IsInstall: true}
	vals, err := util.ToRenderValues(ch, values, opts, nil)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(files[name]) == "" {
			continue
		}
		out.WriteString("---\n# Source: " + name + "\n" + files[name] + "\n")
	}
	return out.Bytes(), nil
}

// valueSet is one way to install the chart.
type valueSet struct {
	name   string
	values string // values.yaml text
	// cluster: it installs a control plane and gateway; hub: a hub.
	cluster, hub bool
	repo, tag    string
}

var valueSets = []valueSet{
	{name: "cluster", cluster: true, repo: "federate", tag: "0.1.0", values: `
cluster: {name: east, network: net-east, locality: us-east/us-east-1a}
`},
	{name: "hub", hub: true, repo: "federate", tag: "0.1.0", values: `
controlPlane: {enabled: false}
gateway: {enabled: false}
hub: {enabled: true, mesh: shop, advertise: "203.0.113.10:15012"}
`},
	{name: "ha-hub-on-etcd", hub: true, repo: "registry.example:5000/mesh", tag: "v0.4.0", values: `
image: {repository: "registry.example:5000/mesh/", tag: v0.4.0}
controlPlane: {enabled: false}
gateway: {enabled: false}
hub:
  enabled: true
  mesh: shop
  advertise: hub.example.com:15012
  replicas: 3
  store: etcd
  etcd:
    endpoints: [https://etcd-0.etcd:2379, https://etcd-1.etcd:2379, https://etcd-2.etcd:2379]
    tlsSecret: federate-hub-etcd
  caSecret: federate-hub-ca
metrics: {serviceMonitor: {enabled: true, labels: {release: prometheus}}}
`},
	{name: "everything", cluster: true, hub: true, repo: "registry.example/federate", tag: "v0.5.0-rc.1", values: `
image: {repository: registry.example/federate, tag: v0.5.0-rc.1, pullPolicy: Always}
cluster: {name: west, network: net-west, locality: eu-west/eu-west-1b/rack-3}
controlPlane:
  replicas: 3
  istioWrite: true
  gatewayAddress: 198.51.100.7:15443
  resources: {requests: {cpu: 500m, memory: 256Mi}, limits: {cpu: "2", memory: 1Gi}}
  persistence: {size: 5Gi, storageClass: fast}
gateway:
  replicas: 4
  podDisruptionBudget: {maxUnavailable: 1}
  service: {annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}}
hub: {enabled: true, mesh: shop, advertise: "198.51.100.2:15012"}
probes: {grpc: {enabled: false}}
metrics: {port: 9090, serviceMonitor: {enabled: true}}
nodeSelector: {kubernetes.io/os: linux}
`},
}

func (v valueSet) parse(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(v.values), &m); err != nil {
		t.Fatalf("%s: %v", v.name, err)
	}
	return m
}

// Every value set renders to production-shaped pods running the images it
// names, with its cluster's values and, for an HA hub, the etcd store.
func TestChartRendersEveryValueSet(t *testing.T) {
	for _, v := range valueSets {
		t.Run(v.name, func(t *testing.T) {
			data, err := renderChart(t, v.parse(t))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, data, filepath.Join("testdata", "chart-"+v.name+".yaml"))
			m := decode(t, data)
			checkImages(t, m, v.repo, v.tag)
			checkContainers(t, m)
			if v.cluster {
				checkPods(t, m, !strings.Contains(v.values, "grpc: {enabled: false}"))
				checkClusterArgs(t, m, v.parse(t))
			} else if len(m.ofKind("Deployment")) != 0 || m.get(t, "StatefulSet", "federate-controlplane", &appsv1.StatefulSet{}) {
				t.Error("a hub-only release runs a control plane or gateway")
			}
			if v.hub {
				checkHub(t, m, v.parse(t))
			}
			wantMonitors := 0
			if strings.Contains(v.values, "serviceMonitor: {enabled: true") {
				wantMonitors = 1
				if v.cluster {
					wantMonitors = 3
				}
			}
			if n := len(m.ofKind("ServiceMonitor")); n != wantMonitors {
				t.Errorf("%d ServiceMonitors, want %d", n, wantMonitors)
			}
		})
	}
}

// checkGolden compares a render with its golden file ('go test ./deploy
// -update' rewrites it), so that a change to the chart shows in review.
func checkGolden(t *testing.T, got []byte, path string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run 'go test ./deploy -run TestChartRendersEveryValueSet -update'", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the chart's render differs from %s: run 'go test ./deploy -run TestChartRendersEveryValueSet -update' and review the diff", path)
	}
}

// checkClusterArgs: the control plane runs as the values' cluster.
func checkClusterArgs(t *testing.T, m manifests, values map[string]any) {
	t.Helper()
	var cp appsv1.StatefulSet
	m.get(t, "StatefulSet", "federate-controlplane", &cp)
	cluster := values["cluster"].(map[string]any)
	args := cp.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"--cluster=" + cluster["name"].(string), "--network=" + cluster["network"].(string),
		"--locality=" + cluster["locality"].(string), "--kube-namespace=" + chartNamespace} {
		if !slices.Contains(args, want) {
			t.Errorf("control plane args %v lack %s", args, want)
		}
	}
}

// checkHub: the hub's mesh and address, its probes, and with store etcd
// the etcd flags, the client certificate mounted where they point, and a
// PodDisruptionBudget for its replicas.
func checkHub(t *testing.T, m manifests, values map[string]any) {
	t.Helper()
	var hub appsv1.StatefulSet
	if !m.get(t, "StatefulSet", "federate-hub", &hub) {
		t.Fatal("no hub StatefulSet")
	}
	hv := values["hub"].(map[string]any)
	c := hub.Spec.Template.Spec.Containers[0]
	for _, want := range []string{"hub", "--mesh=" + hv["mesh"].(string), "--advertise=" + hv["advertise"].(string)} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("hub args %v lack %s", c.Args, want)
		}
	}
	_, httpStartup := values["probes"]
	checkHealthProbes(t, c, "the hub", !httpStartup)
	if hv["store"] != "etcd" {
		if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--store") }) {
			t.Errorf("a bolt hub runs with %v", c.Args)
		}
		return
	}
	if *hub.Spec.Replicas != 3 {
		t.Errorf("the HA hub runs %d replicas, want 3", *hub.Spec.Replicas)
	}
	for _, want := range []string{"--store=etcd", "--etcd-endpoints=https://etcd-0.etcd:2379,https://etcd-1.etcd:2379,https://etcd-2.etcd:2379",
		"--etcd-cert=/etc/federate/etcd/tls.crt", "--etcd-key=/etc/federate/etcd/tls.key", "--etcd-ca=/etc/federate/etcd/ca.crt",
		"--ca-file=/etc/federate/ca/ca.pem", "--gossip-advertise=$(POD_IP):15015"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("HA hub args %v lack %s", c.Args, want)
		}
	}
	mounted := slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == "/etc/federate/etcd" })
	secret := slices.ContainsFunc(hub.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "federate-hub-etcd"
	})
	if !mounted || !secret {
		t.Error("the etcd client Secret is not mounted at /etc/federate/etcd")
	}
	caMounted := slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == "/etc/federate/ca" })
	caSecret := slices.ContainsFunc(hub.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "federate-hub-ca"
	})
	if !caMounted || !caSecret {
		t.Error("the mesh CA Secret is not mounted at /etc/federate/ca")
	}
	checkPDB(t, m, hub.Spec.Template.Labels, "the hub")
}

// Incomplete or wrong values fail with a message that names the value to
// set, from the templates' checks and from values.schema.json.
func TestChartRefusesBadValues(t *testing.T) {
	cases := map[string]struct{ values, want string }{
		"no cluster":          {`{gateway: {enabled: false}}`, "cluster.name, cluster.network and cluster.locality"},
		"gateway, no network": {`{controlPlane: {enabled: false}}`, "gateway needs cluster.network"},
		"hub without mesh":    {`{controlPlane: {enabled: false}, gateway: {enabled: false}, hub: {enabled: true}}`, "hub.mesh"},
		"replicated bolt hub": {`{controlPlane: {enabled: false}, gateway: {enabled: false}, hub: {enabled: true, mesh: m, advertise: "a:1", replicas: 2}}`, "hub.store=etcd"},
		"etcd without certs":  {`{controlPlane: {enabled: false}, gateway: {enabled: false}, hub: {enabled: true, mesh: m, advertise: "a:1", store: etcd, etcd: {endpoints: ["https://e:2379"]}}}`, "hub.etcd.tlsSecret"},
		"etcd without CA":     {`{controlPlane: {enabled: false}, gateway: {enabled: false}, hub: {enabled: true, mesh: m, advertise: "a:1", store: etcd, etcd: {endpoints: ["https://e:2379"], tlsSecret: s}}}`, "hub.caSecret"},
		"unknown store":       {`{controlPlane: {enabled: false}, gateway: {enabled: false}, hub: {enabled: true, mesh: m, advertise: "a:1", store: mysql}}`, "store"},
		"bad locality":        {`{cluster: {name: east, network: n, locality: "just-a-region"}}`, "locality"},
		"zero gateways":       {`{cluster: {name: east, network: n, locality: r/z}, gateway: {replicas: 0}}`, "replicas"},
		"bad pull policy":     {`{cluster: {name: east, network: n, locality: r/z}, image: {pullPolicy: Sometimes}}`, "pullPolicy"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(c.values), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := renderChart(t, vals)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("render: %v, want an error naming %q", err, c.want)
			}
		})
	}
}

// The chart grants the control plane exactly what deploy/controlplane
// grants, so that the RBAC test of the kustomize base covers both.
func TestChartRBACMatchesKustomize(t *testing.T) {
	data, err := renderChart(t, valueSets[0].parse(t))
	if err != nil {
		t.Fatal(err)
	}
	chart, base := decode(t, data), decode(t, render(t, "controlplane"))
	for _, kind := range []string{"ClusterRole", "Role"} {
		var a, b rbacv1.ClusterRole
		chart.get(t, kind, "federate-controlplane", &a)
		base.get(t, kind, "federate-controlplane", &b)
		if len(a.Rules) == 0 || !slices.EqualFunc(a.Rules, b.Rules, ruleEqual) {
			t.Errorf("the chart's %s rules differ from deploy/controlplane's:\nchart: %+v\nbase:  %+v", kind, a.Rules, b.Rules)
		}
	}
}

// With controlPlane.istioWrite the chart adds what
// deploy/controlplane/istio-rbac.yaml grants, and only then.
func TestChartIstioWriteRBACMatchesKustomize(t *testing.T) {
	extra, err := os.ReadFile(filepath.Join("controlplane", "istio-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	base := decode(t, extra)
	for _, v := range valueSets {
		data, err := renderChart(t, v.parse(t))
		if err != nil {
			t.Fatal(err)
		}
		chart := decode(t, data)
		istioWrite := strings.Contains(v.values, "istioWrite: true")
		for _, kind := range []string{"ClusterRole", "Role"} {
			var a, b rbacv1.ClusterRole
			found := chart.get(t, kind, "federate-controlplane-istio", &a)
			if found != istioWrite {
				t.Errorf("%s: %s federate-controlplane-istio rendered: %v, istioWrite: %v", v.name, kind, found, istioWrite)
				continue
			}
			base.get(t, kind, "federate-controlplane-istio", &b)
			if found && !slices.EqualFunc(a.Rules, b.Rules, ruleEqual) {
				t.Errorf("%s: the chart's %s federate-controlplane-istio differs from istio-rbac.yaml's", v.name, kind)
			}
		}
	}
}

func ruleEqual(a, b rbacv1.PolicyRule) bool {
	return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) &&
		slices.Equal(a.Verbs, b.Verbs) && slices.Equal(a.ResourceNames, b.ResourceNames)
}

// The chart's CRDs are deploy/crds/mcs's, byte for byte.
func TestChartCRDsMatchDeploy(t *testing.T) {
	for _, f := range []string{"serviceexports.yaml", "serviceimports.yaml"} {
		a, errA := os.ReadFile(filepath.Join("chart", "crds", f))
		b, errB := os.ReadFile(filepath.Join("crds", "mcs", f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("chart/crds/%s differs from crds/mcs/%s: copy it over (%v %v)", f, f, errA, errB)
		}
	}
}

// Helm's linter finds nothing to report, with each value set.
func TestChartLints(t *testing.T) {
	for _, v := range valueSets {
		res := lint.RunAll("chart", v.parse(t), chartNamespace)
		for _, msg := range res.Messages {
			if msg.Severity > support.InfoSev {
				t.Errorf("%s: helm lint: %s", v.name, msg)
			}
		}
	}
}

// Every value set's manifests pass a server-side dry-run apply on a real
// kube-apiserver, after the chart's CRDs are installed as 'helm install'
// installs them.
func TestIntegrationChartDryRun(t *testing.T) {
	c := kubetest.Start(t, "chart")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.EnsureNamespace(t, chartNamespace, nil)
	// The ServiceMonitor kind, which the Prometheus Operator would bring.
	c.ApplyFiles(t, filepath.Join("chart", "crds", "serviceexports.yaml"), filepath.Join("chart", "crds", "serviceimports.yaml"),
		filepath.Join("testdata", "servicemonitor-crd.yaml"))
	c.WaitForResource(t, "monitoring.coreos.com/v1", "servicemonitors")
	c.WaitForResource(t, "multicluster.x-k8s.io/v1beta1", "serviceexports")
	for _, v := range valueSets {
		t.Run(v.name, func(t *testing.T) {
			data, err := renderChart(t, v.parse(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := kubetest.Apply(ctx, c.Config, data, true); err != nil {
				t.Fatalf("server-side dry run: %v", err)
			}
		})
	}
}
