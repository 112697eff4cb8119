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

// coffeeShop returns the exported services of the i-th cluster as YAML in
// the file source's Istio form: order in east, payment in west and central,
// inventory in central; further clusters run payment.
func coffeeShop(i int, c cluster) string {
	var b strings.Builder
	b.WriteString("# The coffee shop's services in cluster " + c.Name + ".\n")
	svc := func(name string, port, endpoints int) {
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[1]s
  namespace: shop
export: true
spec:
  hosts: [%[1]s.shop.svc.cluster.local]
  ports: [{number: %[2]d, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: %[1]s}
`, name, port)
		for e := range endpoints {
			fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: %[1]s-%[2]d
  namespace: shop
spec:
  address: 127.0.%[3]d.%[4]d
  labels: {app: %[1]s, version: v1}
  ports: {http: %[5]d}
  serviceAccount: %[1]s
`, name, e+1, 10+i, 10+e, port+100*i)
		}
	}
	switch c.Name {
	case "east":
		svc("order", 8080, 2)
	case "west":
		svc("payment", 8081, 2)
	case "central":
		svc("inventory", 8082, 1)
		svc("payment", 8081, 1)
	default:
		svc("payment", 8081, 1)
	}
	return b.String()
}
