package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/federate/federate/internal/kubetest"
)

// manifests are rendered objects, looked up by kind and name.
type manifests []*unstructured.Unstructured

func decode(t *testing.T, data []byte) manifests {
	t.Helper()
	objs, err := kubetest.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// get converts the object of kind and name into out, and says whether
// there is one.
func (m manifests) get(t *testing.T, kind, name string, out any) bool {
	t.Helper()
	for _, o := range m {
		if o.GetKind() == kind && o.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			return true
		}
	}
	return false
}

func (m manifests) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// checkPods checks what issue 17 asks of the cluster's pods: the gateway in
// a Deployment of its own with 2 replicas, a PodDisruptionBudget,
// readiness on /healthz/ready and a liveness probe; the control plane with
// 2 replicas, /livez and /readyz on its metrics port and Lease RBAC; every
// container non-root with requests and limits.
func checkPods(t *testing.T, m manifests, grpcStartup bool) {
	t.Helper()
	var gw appsv1.Deployment
	if !m.get(t, "Deployment", "eastwest-gateway", &gw) {
		t.Fatal("no eastwest-gateway Deployment")
	}
	if gw.Spec.Replicas == nil || *gw.Spec.Replicas < 2 {
		t.Errorf("the gateway runs %d replicas, want 2 or more", replicas(gw.Spec.Replicas))
	}
	gc := gw.Spec.Template.Spec.Containers[0]
	if p := gc.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz/ready" {
		t.Errorf("the gateway's readiness probe is %+v, want GET /healthz/ready", p)
	}
	if p := gc.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/livez" {
		t.Errorf("the gateway's liveness probe is %+v, want GET /livez", p)
	}
	checkPDB(t, m, gw.Spec.Template.Labels, "the gateway")

	var cp appsv1.StatefulSet
	if !m.get(t, "StatefulSet", "federate-controlplane", &cp) {
		t.Fatal("no federate-controlplane StatefulSet")
	}
	if cp.Spec.Replicas == nil || *cp.Spec.Replicas < 2 {
		t.Errorf("the control plane runs %d replicas, want 2 or more", replicas(cp.Spec.Replicas))
	}
	if n := len(cp.Spec.Template.Spec.Containers); n != 1 {
		t.Errorf("the control plane's pod has %d containers: the gateway belongs in its own Deployment", n)
	}
	checkHealthProbes(t, cp.Spec.Template.Spec.Containers[0], "the control plane", grpcStartup)
	checkLeaderElection(t, m, cp)
	checkPDB(t, m, cp.Spec.Template.Labels, "the control plane")
	checkLeaseRBAC(t, m)
	checkContainers(t, m)
}

// replicas is a workload's replica count, 1 when unset as Kubernetes
// defaults it.
func replicas(n *int32) int32 {
	if n == nil {
		return 1
	}
	return *n
}

// checkHealthProbes: liveness on /livez and readiness on /readyz, both on
// the port --metrics-listen serves, and a startup probe: with grpcStartup
// the kubelet's gRPC probe of the gRPC health service on that port.
func checkHealthProbes(t *testing.T, c corev1.Container, who string, grpcStartup bool) {
	t.Helper()
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/livez" {
		t.Errorf("%s's liveness probe is %+v, want GET /livez", who, p)
	} else if !servesMetricsOn(c, p.HTTPGet.Port.String()) {
		t.Errorf("%s's liveness probe targets port %s, not the --metrics-listen port", who, p.HTTPGet.Port.String())
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("%s's readiness probe is %+v, want GET /readyz", who, p)
	}
	p := c.StartupProbe
	switch {
	case p == nil:
		t.Errorf("%s has no startup probe", who)
	case grpcStartup && (p.GRPC == nil || !servesMetricsOn(c, itoa(p.GRPC.Port))):
		t.Errorf("%s's startup probe is %+v, want gRPC health on the --metrics-listen port", who, p)
	case !grpcStartup && (p.HTTPGet == nil || p.HTTPGet.Path != "/livez"):
		t.Errorf("%s's startup probe is %+v, want GET /livez", who, p)
	}
}

// servesMetricsOn says whether port (a name or number) is the container
// port that its --metrics-listen flag opens.
func servesMetricsOn(c corev1.Container, port string) bool {
	var listen string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--metrics-listen="); ok {
			listen = v
		}
	}
	for _, p := range c.Ports {
		if (p.Name == port || strings.TrimSpace(port) == itoa(p.ContainerPort)) && strings.HasSuffix(listen, ":"+itoa(p.ContainerPort)) {
			return true
		}
	}
	return false
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

func checkPDB(t *testing.T, m manifests, podLabels map[string]string, who string) {
	t.Helper()
	for _, o := range m.ofKind("PodDisruptionBudget") {
		var pdb policyv1.PodDisruptionBudget
		m.get(t, "PodDisruptionBudget", o.GetName(), &pdb)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if sel.Matches(labels.Set(podLabels)) && !sel.Empty() {
			if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
				t.Errorf("%s's PodDisruptionBudget %s sets no budget", who, pdb.Name)
			}
			return
		}
	}
	t.Errorf("no PodDisruptionBudget selects %s's pods", who)
}

// checkLeaderElection: the replicas elect a leader (--leader-elect, with
// their Pod's name), and the Service sends traffic to the leader only.
func checkLeaderElection(t *testing.T, m manifests, cp appsv1.StatefulSet) {
	t.Helper()
	c := cp.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--leader-elect") {
		t.Errorf("the control plane's replicas run without --leader-elect: %v", c.Args)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Error("the control plane lacks $POD_NAME, its Lease identity and the Pod it labels")
	}
	var svc corev1.Service
	m.get(t, "Service", "federate-controlplane", &svc)
	if svc.Spec.Selector["federate.io/role"] != "leader" {
		t.Errorf("the control plane's Service selects %v, not only the leader", svc.Spec.Selector)
	}
}

func checkLeaseRBAC(t *testing.T, m manifests) {
	t.Helper()
	var role rbacv1.Role
	if !m.get(t, "Role", "federate-controlplane", &role) {
		t.Fatal("no federate-controlplane Role")
	}
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, "coordination.k8s.io") && slices.Contains(r.Resources, "leases") {
			for _, v := range []string{"get", "create", "update"} {
				if !slices.Contains(r.Verbs, v) {
					t.Errorf("the control plane may not %s Leases", v)
				}
			}
			return
		}
	}
	t.Error("the control plane's Role grants no coordination.k8s.io Leases: leader election fails")
}

// checkContainers: every workload's pod runs as non-root with requests and
// limits on each container.
func checkContainers(t *testing.T, m manifests) {
	t.Helper()
	for _, kind := range []string{"Deployment", "StatefulSet"} {
		for _, o := range m.ofKind(kind) {
			var spec corev1.PodTemplateSpec
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object["spec"].(map[string]any)["template"].(map[string]any), &spec); err != nil {
				t.Fatal(err)
			}
			sc := spec.Spec.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
				t.Errorf("%s %s may run as root", kind, o.GetName())
			}
			for _, c := range spec.Spec.Containers {
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if _, ok := c.Resources.Requests[res]; !ok {
						t.Errorf("%s %s container %s requests no %s", kind, o.GetName(), c.Name, res)
					}
					if _, ok := c.Resources.Limits[res]; !ok {
						t.Errorf("%s %s container %s has no %s limit", kind, o.GetName(), c.Name, res)
					}
				}
				if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
					t.Errorf("%s %s container %s may escalate privileges", kind, o.GetName(), c.Name)
				}
			}
		}
	}
}

// The default install and the bases are production-shaped.
func TestDefaultInstallPodsAreProductionShaped(t *testing.T) {
	m := decode(t, render(t, "."))
	checkPods(t, m, true)
	var hub appsv1.StatefulSet
	if !decode(t, render(t, "hub")).get(t, "StatefulSet", "federate-hub", &hub) {
		t.Fatal("no hub StatefulSet")
	}
	checkHealthProbes(t, hub.Spec.Template.Spec.Containers[0], "the hub", true)
	checkContainers(t, decode(t, render(t, "hub")))
}

// clusterValue matches the lab's cluster-specific values.
var clusterValue = regexp.MustCompile(`\b(east|west|central)\b`)

// The default install and every base name no cluster, and the default
// install leaves Istio's CRDs alone.
func TestBasesHoldNoClusterValues(t *testing.T) {
	for _, dir := range []string{".", "controlplane", "gateway", "hub"} {
		data := render(t, dir)
		if loc := clusterValue.FindIndex(data); loc != nil {
			t.Errorf("kustomize build %s names a cluster: %q", dir, data[max(0, loc[0]-40):loc[1]])
		}
		for _, o := range decode(t, data) {
			if o.GetKind() == "ConfigMap" {
				t.Errorf("kustomize build %s holds ConfigMap %s: cluster values belong in overlays", dir, o.GetName())
			}
			if o.GetKind() == "CustomResourceDefinition" && strings.HasSuffix(o.GetName(), ".istio.io") {
				t.Errorf("kustomize build %s installs Istio's CRD %s: it is the opt-in component deploy/components/istio-crds", dir, o.GetName())
			}
		}
	}
}

// Each lab overlay names its cluster, network and locality, labels its
// gateway with its network, adds Istio's CRDs, and uses the images
// kind-clusters/ loads.
func TestOverlaysNameTheirCluster(t *testing.T) {
	repo, tag := labImage(t)
	for _, c := range []string{"east", "west", "central"} {
		t.Run(c, func(t *testing.T) {
			m := decode(t, render(t, "overlays/"+c))
			var cm corev1.ConfigMap
			if !m.get(t, "ConfigMap", "federate-cluster", &cm) {
				t.Fatal("no federate-cluster ConfigMap")
			}
			want := map[string]string{"cluster": c, "network": "net-" + c, "locality": "region-" + c + "/region-" + c + "-a"}
			for k, v := range want {
				if cm.Data[k] != v {
					t.Errorf("federate-cluster %s = %q, want %q", k, cm.Data[k], v)
				}
			}
			var svc corev1.Service
			m.get(t, "Service", "eastwest-gateway", &svc)
			if svc.Labels["topology.istio.io/network"] != "net-"+c {
				t.Errorf("the gateway Service's network label is %q", svc.Labels["topology.istio.io/network"])
			}
			if len(m.ofKind("CustomResourceDefinition")) != 7 {
				t.Errorf("%d CRDs, want MCS's 2 and Istio's 5", len(m.ofKind("CustomResourceDefinition")))
			}
			checkImages(t, m, repo, tag)
			checkPods(t, m, true)
		})
	}
}

// labImage reads the image repository and tag kind-clusters/lib.sh loads.
func labImage(t *testing.T) (repo, tag string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "kind-clusters", "lib.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "IMAGE_REPOSITORY="); ok {
			repo = v
		}
		if v, ok := strings.CutPrefix(line, "IMAGE_TAG="); ok {
			tag = v
		}
	}
	if repo == "" || tag == "" {
		t.Fatal("kind-clusters/lib.sh sets no IMAGE_REPOSITORY and IMAGE_TAG")
	}
	return repo, tag
}

// checkImages: every container runs REPO/federate:TAG or
// REPO/eastwest-gateway:TAG.
func checkImages(t *testing.T, m manifests, repo, tag string) {
	t.Helper()
	for _, kind := range []string{"Deployment", "StatefulSet"} {
		for _, o := range m.ofKind(kind) {
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range cs {
				img := c.(map[string]any)["image"].(string)
				if img != repo+"/federate:"+tag && img != repo+"/eastwest-gateway:"+tag {
					t.Errorf("%s %s runs image %s, want %s/{federate,eastwest-gateway}:%s", kind, o.GetName(), img, repo, tag)
				}
			}
		}
	}
}
