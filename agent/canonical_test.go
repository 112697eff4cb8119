package agent

import (
	"maps"
	"testing"

	networkingpb "istio.io/api/networking/v1alpha3"
)

// The canonical service and revision follow Istio's lookup order and
// defaults (istio.io/istio pkg/config/labels, used by istioctl x workload
// entry configure).
func TestCanonicalServiceAsIstio(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		labels                 map[string]string
		wantService, wantRevis string
	}{
		{"no labels: the group, latest", nil, "barista", "latest"},
		{"app and version", map[string]string{"app": "espresso", "version": "v1"}, "espresso", "v1"},
		{"app.kubernetes.io before app", map[string]string{"app": "espresso", "app.kubernetes.io/name": "coffee", "version": "v1", "app.kubernetes.io/version": "2.0"}, "coffee", "2.0"},
		{"canonical labels before all", map[string]string{
			"app": "espresso", "app.kubernetes.io/name": "coffee", "service.istio.io/canonical-name": "bar",
			"version": "v1", "app.kubernetes.io/version": "2.0", "service.istio.io/canonical-revision": "r7",
		}, "bar", "r7"},
		{"an empty label counts as set", map[string]string{"app": "", "version": ""}, "", ""},
		{"unrelated labels: the group", map[string]string{"tier": "web"}, "barista", "latest"},
	} {
		service, revision := CanonicalService(tc.labels, "barista")
		if service != tc.wantService || revision != tc.wantRevis {
			t.Errorf("%s: CanonicalService = %q, %q; want %q, %q", tc.name, service, revision, tc.wantService, tc.wantRevis)
		}
	}
}

// As istioctl merges them: template labels override the metadata's.
func TestGroupLabelsTemplateOverridesMetadata(t *testing.T) {
	wg := &networkingpb.WorkloadGroup{
		Metadata: &networkingpb.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "espresso", "version": "v1"}},
		Template: &networkingpb.WorkloadEntry{Labels: map[string]string{"version": "v2", "tier": "web"}},
	}
	want := map[string]string{"app": "espresso", "version": "v2", "tier": "web"}
	if got := GroupLabels(wg); !maps.Equal(got, want) {
		t.Errorf("GroupLabels = %v, want %v", got, want)
	}
	if got := GroupLabels(&networkingpb.WorkloadGroup{}); got == nil || len(got) != 0 {
		t.Errorf("GroupLabels of an empty group = %v, want an empty map", got)
	}
}
