package locality

import (
	"strings"
	"testing"
)

// DestinationRules printed by `kubectl get destinationrule -o yaml` (a List
// with status and server-set metadata) are read item by item, beside the
// ServiceEntries of a config directory; a bad item is named.
func TestParseDestinationRulesInKubectlList(t *testing.T) {
	const list = `# kubectl get dr,se -n shop -o yaml
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata:
    creationTimestamp: "2026-11-30T09:12:44Z"
    generation: 2
    name: payments
    namespace: shop
    resourceVersion: "48213"
    uid: 6f1c8f0e-64d2-4f1e-9c7a-0b9d5e3c2a11
  spec:
    host: payments.shop.svc.cluster.local
    trafficPolicy:
      loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: eu-west}]}}
      outlierDetection: {consecutive5xxErrors: 5, interval: 1m, baseEjectionTime: 30s}
  status: {}
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: payments, namespace: shop}
  spec: {hosts: [payments.shop.svc.cluster.local], ports: [{number: 9090, name: grpc}]}
- apiVersion: networking.istio.io/v1beta1
  kind: DestinationRule
  metadata: {name: orders, namespace: shop}
  spec:
    host: orders.shop.svc.cluster.local
    trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-west}]}}, outlierDetection: {consecutive5xxErrors: 1}}
metadata: {resourceVersion: ""}
`
	rules, err := ParseDestinationRulesIn([]byte(list))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Host != "payments.shop.svc.cluster.local" || rules[1].Ref() != "shop/orders" {
		t.Fatalf("rules %v, want payments and orders from the List", rules)
	}
	if got := rules[0].Policy("", 0); len(got.Failover) != 1 || got.Failover[0].To != "eu-west" || !got.OutlierDetection {
		t.Errorf("payments policy %+v, want its failover and outlier detection", got)
	}
	bad := strings.Replace(list, "to: us-west", "to: us-east", 1)
	if _, err := ParseDestinationRulesIn([]byte(bad)); err == nil || !strings.Contains(err.Error(), "document 1 item 3 (line 2)") {
		t.Errorf("a bad item: %v, want it named as document 1 item 3 (line 2)", err)
	}
}
