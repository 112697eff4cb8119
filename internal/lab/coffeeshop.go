package lab

import (
	"fmt"
	"strings"
)

// cluster is one lab cluster's fixed identity.
type cluster struct {
	Name     string
	Network  string
	Locality string
}

// clusters returns the lab's clusters: east, west and central, then more
// if asked for.
func clusters(n int) []cluster {
	out := []cluster{
		{"east", "net-east", "us-east/us-east-1a"},
		{"west", "net-west", "us-west/us-west-2a"},
		{"central", "net-central", "eu-central/eu-central-1a"},
	}
	for i := len(out); i < n; i++ {
		out = append(out, cluster{fmt.Sprintf("cluster-%d", i+1), fmt.Sprintf("net-%d", i+1), fmt.Sprintf("region-%d/zone-a", i+1)})
	}
	return out[:n]
}

// coffeeShop returns the services cluster c exports, as YAML in the file
// source's Istio form: one ServiceEntry per service placed there, whose
// endpoints are the instances' sidecars once their agents register.
func coffeeShop(c cluster) string {
	var b strings.Builder
	b.WriteString("# The coffee shop's services in cluster " + c.Name + ".\n")
	seen := map[string]bool{}
	b.WriteString(paymentPolicy)
	for _, name := range placement(c) {
		if seen[name] {
			continue
		}
		seen[name] = true
		b.WriteString(coffeeShopService(name))
	}
	return b.String()
}

// paymentPolicy is the coffee shop's locality policy, the same in every
// cluster: payment stays in its caller's locality while it is healthy,
// and east and west fail over to each other before going to Europe.
const paymentPolicy = `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: shop}
spec:
  host: payment.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover:
        - {from: us-east, to: us-west}
        - {from: us-west, to: us-east}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}
`

// coffeeShopService is the exported ServiceEntry of one coffee-shop service.
func coffeeShopService(name string) string {
	return fmt.Sprintf(`---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata:
  name: %[1]s
  namespace: shop
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[1]s
  namespace: shop
spec:
  hosts: [%[1]s.shop.svc.cluster.local]
  ports: [{number: %[2]d, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: %[1]s}
`, name, portOf(name))
}
