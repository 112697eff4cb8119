package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/controlplane"
)

// kubeFlags select the Kubernetes mode: services from the cluster's API,
// the membership in a Secret. The kubeconfig flags are kubectl's:
// --kubeconfig or $KUBECONFIG, --context, -n.
type kubeFlags struct {
	kubeconfigPath string
	context        string
	namespaceFlag  string
	inCluster      bool
	kubeNamespace  string
	secret         string
	gatewayService string
	gatewaySecret  string
	podName        string
	leader         controlplane.LeaderElection
	leaderElect    bool
}

func (k *kubeFlags) register(cmd *cobra.Command, controlPlane bool) {
	fs := cmd.Flags()
	// Only the flags that choose a cluster and a namespace: credentials
	// and servers come from the kubeconfig.
	fs.StringVar(&k.kubeconfigPath, "kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG, else ~/.kube/config): keep the membership in a Secret there"+
		map[bool]string{true: ", and take services from its ServiceExports instead of --config-dir", false: ""}[controlPlane])
	fs.StringVar(&k.context, "context", "", "the kubeconfig context to use (default: its current context)")
	fs.StringVarP(&k.namespaceFlag, "namespace", "n", "", "namespace of the membership Secret"+
		map[bool]string{true: " and the gateway Service", false: ""}[controlPlane]+" (default "+controlplane.DefaultKubeNamespace+")")
	_ = cmd.RegisterFlagCompletionFunc("context", k.completeContexts)
	_ = cmd.MarkFlagFilename("kubeconfig")
	fs.BoolVar(&k.inCluster, "in-cluster", false, "like --kubeconfig, with the Pod's ServiceAccount")
	fs.StringVar(&k.kubeNamespace, "kube-namespace", "", "the same as --namespace")
	fs.StringVar(&k.secret, "membership-secret", controlplane.DefaultMembershipSecret, "name of the Secret that holds the cluster credential")
	if controlPlane {
		k.registerLeaderElection(fs)
		fs.StringVar(&k.gatewayService, "gateway-service", controlplane.DefaultGatewayService, "with --kubeconfig and no --gateway: the LoadBalancer Service whose address is announced as this cluster's gateway")
		fs.StringVar(&k.gatewaySecret, "gateway-secret", controlplane.DefaultGatewaySecret, "the Secret, in --namespace, the leader keeps with the east-west gateway's SVID (gateway.pem) and the mesh CA (ca.pem) for the gateway's Pods to mount")
	}
}

// completeContexts completes --context with the kubeconfig's contexts, as
// kubectl does.
func (k *kubeFlags) completeContexts(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	raw, err := k.loader().RawConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for name, c := range raw.Contexts {
		names = append(names, cobra.CompletionWithDesc(name, c.Cluster))
	}
	slices.Sort(names)
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (k *kubeFlags) registerLeaderElection(fs *pflag.FlagSet) {
	fs.BoolVar(&k.leaderElect, "leader-elect", false, "with --kubeconfig or --in-cluster: run only while this replica holds a Lease in --kube-namespace;\n"+
		"other replicas stand by and take over when it stops (docs/operations.md)")
	fs.StringVar(&k.leader.Lease, "leader-elect-resource-name", controlplane.DefaultLeaseName, "name of the leader election Lease")
	fs.DurationVar(&k.leader.LeaseDuration, "leader-elect-lease-duration", controlplane.DefaultLeaseDuration, "how long standbys wait after the leader's last renewal before taking over")
	fs.DurationVar(&k.leader.RenewDeadline, "leader-elect-renew-deadline", controlplane.DefaultRenewDeadline, "how long the leader retries renewing before it stops leading")
	fs.DurationVar(&k.leader.RetryPeriod, "leader-elect-retry-period", controlplane.DefaultRetryPeriod, "how often replicas try to acquire or renew the Lease")
	fs.StringVar(&k.podName, "pod-name", os.Getenv("POD_NAME"), "this replica's Pod (default $POD_NAME): with --leader-elect, labelled "+controlplane.RoleLabel+"="+controlplane.RoleLeader+"\n"+
		"or "+controlplane.RoleStandby+" for the Service to select the leader; also the Lease identity (default the host name)")
}

// leaderElection is the control plane's leader election, or nil; inKube
// says whether the control plane runs against a Kubernetes cluster.
func (k *kubeFlags) leaderElection(inKube bool) (*controlplane.LeaderElection, error) {
	if !k.leaderElect {
		return nil, nil
	}
	if !inKube {
		return nil, errors.New("--leader-elect keeps a Lease in a Kubernetes cluster: add --kubeconfig F or --in-cluster")
	}
	le := k.leader
	le.Identity = k.podName
	return &le, nil
}

// explicit reports whether a flag asks for a Kubernetes cluster.
func (k *kubeFlags) explicit() bool {
	return k.kubeconfigPath != "" || k.context != "" || k.inCluster
}

// namespace is -n, else --kube-namespace, else federate's own namespace
// (never the context's: the Secret lives beside the control plane).
func (k *kubeFlags) namespace() (string, error) {
	n, old := k.namespaceFlag, k.kubeNamespace
	if n != "" && old != "" && n != old {
		return "", cli.Usagef("--namespace %s and --kube-namespace %s disagree: give one", n, old)
	}
	return cmp.Or(n, old, controlplane.DefaultKubeNamespace), nil
}

// connect builds the client from the kubeconfig or the in-cluster config.
func (k *kubeFlags) connect() (*controlplane.Kube, error) {
	ns, err := k.namespace()
	if err != nil {
		return nil, err
	}
	if k.kubeconfigPath != "" && k.inCluster {
		return nil, cli.Usagef("--kubeconfig and --in-cluster exclude each other: pick one")
	}
	var config *rest.Config
	if k.inCluster {
		if config, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("--in-cluster: %w (outside a Pod, use --kubeconfig)", err)
		}
	} else if config, err = k.kubeconfig(); err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return &controlplane.Kube{Config: config, Client: client, Namespace: ns, Secret: k.secret, GatewayService: k.gatewayService, GatewaySecret: k.gatewaySecret, PodName: k.podName}, nil
}

// errNoKubeconfig is the kubeconfig loader's answer when no file names a
// cluster.
var errNoKubeconfig = errors.New("no kubeconfig names a cluster")

// loader reads the kubeconfig as kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config; --context picks the context.
func (k *kubeFlags) loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfigPath
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
}

// kubeconfig loads the REST config the kubeconfig names.
func (k *kubeFlags) kubeconfig() (*rest.Config, error) {
	loader := k.loader()
	raw, err := loader.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig (or $KUBECONFIG): %w", err)
	}
	if len(raw.Contexts) == 0 {
		return nil, fmt.Errorf("--kubeconfig (or $KUBECONFIG, ~/.kube/config): %w: pass --kubeconfig FILE or --in-cluster", errNoKubeconfig)
	}
	config, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig (or $KUBECONFIG) with --context %q: %w", k.context, err)
	}
	return config, nil
}
