package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/federate/federate/controlplane"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags select the Kubernetes mode: services from the cluster's API,
// the membership in a Secret.
type kubeFlags struct {
	kubeconfig     string
	inCluster      bool
	namespace      string
	secret         string
	gatewayService string
	podName        string
	leader         controlplane.LeaderElection
	leaderElect    bool
}

func (k *kubeFlags) register(fs *flag.FlagSet, controlPlane bool) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster: keep the membership in a Secret there"+
		map[bool]string{true: ", and take services from its ServiceExports instead of --config-dir", false: ""}[controlPlane])
	fs.BoolVar(&k.inCluster, "in-cluster", false, "like --kubeconfig, with the Pod's ServiceAccount")
	fs.StringVar(&k.namespace, "kube-namespace", controlplane.DefaultKubeNamespace, "namespace of the membership Secret"+
		map[bool]string{true: " and the gateway Service", false: ""}[controlPlane])
	fs.StringVar(&k.secret, "membership-secret", controlplane.DefaultMembershipSecret, "name of the Secret that holds the cluster credential")
	if controlPlane {
		k.registerLeaderElection(fs)
		fs.StringVar(&k.gatewayService, "gateway-service", controlplane.DefaultGatewayService, "with --kubeconfig and no --gateway: the LoadBalancer Service whose address is announced as this cluster's gateway")
	}
}

func (k *kubeFlags) registerLeaderElection(fs *flag.FlagSet) {
	fs.BoolVar(&k.leaderElect, "leader-elect", false, "with --kubeconfig or --in-cluster: run only while this replica holds a Lease in --kube-namespace;\n"+
		"other replicas stand by and take over when it stops (docs/operations.md)")
	fs.StringVar(&k.leader.Lease, "leader-elect-resource-name", controlplane.DefaultLeaseName, "name of the leader election Lease")
	fs.DurationVar(&k.leader.LeaseDuration, "leader-elect-lease-duration", controlplane.DefaultLeaseDuration, "how long standbys wait after the leader's last renewal before taking over")
	fs.DurationVar(&k.leader.RenewDeadline, "leader-elect-renew-deadline", controlplane.DefaultRenewDeadline, "how long the leader retries renewing before it stops leading")
	fs.DurationVar(&k.leader.RetryPeriod, "leader-elect-retry-period", controlplane.DefaultRetryPeriod, "how often replicas try to acquire or renew the Lease")
	fs.StringVar(&k.podName, "pod-name", os.Getenv("POD_NAME"), "this replica's Pod (default $POD_NAME): with --leader-elect, labelled "+controlplane.RoleLabel+"="+controlplane.RoleLeader+"\n"+
		"or "+controlplane.RoleStandby+" for the Service to select the leader; also the Lease identity (default the host name)")
}

// leaderElection is the control plane's leader election, or nil.
func (k *kubeFlags) leaderElection() (*controlplane.LeaderElection, error) {
	if !k.leaderElect {
		return nil, nil
	}
	if !k.enabled() {
		return nil, errors.New("--leader-elect keeps a Lease in a Kubernetes cluster: add --kubeconfig F or --in-cluster")
	}
	le := k.leader
	le.Identity = k.podName
	return &le, nil
}

func (k *kubeFlags) enabled() bool { return k.kubeconfig != "" || k.inCluster }

// connect builds the client from --kubeconfig or the in-cluster config.
func (k *kubeFlags) connect() (*controlplane.Kube, error) {
	if k.kubeconfig != "" && k.inCluster {
		return nil, errors.New("--kubeconfig and --in-cluster exclude each other: pick one")
	}
	var config *rest.Config
	var err error
	if k.inCluster {
		if config, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("--in-cluster: %w (outside a Pod, use --kubeconfig)", err)
		}
	} else if config, err = clientcmd.BuildConfigFromFlags("", k.kubeconfig); err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", k.kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return &controlplane.Kube{Config: config, Client: client, Namespace: k.namespace, Secret: k.secret, GatewayService: k.gatewayService, PodName: k.podName}, nil
}
