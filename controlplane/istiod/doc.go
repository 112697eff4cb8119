// Package istiod programs an unmodified istiod in the control plane's own
// cluster, so that Istio's Envoy sidecars reach the services other clusters
// export through those clusters' federate east-west gateways, with Istio's
// SNI (outbound_.<port>_.<subset>_.<host>) and Istio mTLS.
//
// For every remote cluster it writes a gateway Service (a LoadBalancer
// Service of its own class, labelled topology.istio.io/network, whose
// status holds the remote gateway's address), and for every imported
// service a MESH_INTERNAL ServiceEntry with WorkloadEntries that carry the
// remote cluster's network, locality, weight and labels and no address:
// istiod then sends the sidecars to the network's gateway (split-horizon
// EDS). Everything it writes carries the managed-by label; it never
// changes or deletes an object without it, and it deletes its own objects
// when the service or the cluster leaves the federation.
//
// The network it writes is federate-<cluster>, never the remote cluster's
// own Istio network name, so that an existing Istio east-west gateway
// keeps the traffic istiod already sends it, and federate's gateways
// receive only the services they export.
package istiod
