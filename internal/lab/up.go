package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"google.golang.org/grpc"
)

// binaries finds the federate, gateway and agent binaries the lab runs.
func binaries(opts Options) (bin, gwBin, agentBin string, err error) {
	bin = opts.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return "", "", "", err
		}
	}
	gwBin = opts.GatewayBinary
	if gwBin == "" {
		gwBin = filepath.Join(filepath.Dir(bin), "eastwest-gateway")
	}
	if _, err := os.Stat(gwBin); err != nil {
		return "", "", "", fmt.Errorf("lab: the gateway binary: %w; build it with 'make build'", err)
	}
	agentBin = opts.AgentBinary
	if agentBin == "" {
		agentBin = filepath.Join(filepath.Dir(bin), "federate-agent")
	}
	if _, err := os.Stat(agentBin); err != nil {
		return "", "", "", fmt.Errorf("lab: the agent binary: %w; build it with 'make build'", err)
	}
	return bin, gwBin, agentBin, nil
}

// startHubs starts the hub, or with ha etcd and the hub replicas, and
// returns an admin connection once it serves.
func (st *State) startHubs(ctx context.Context, p *progress, host string, ha bool) (*grpc.ClientConn, error) {
	if !ha {
		p.step("starting the hub")
		conn, err := st.startHubAndWait(ctx, st.Binary, host)
		if err == nil {
			p.done("hub at " + st.Hub.Addr)
		}
		return conn, err
	}
	p.step(fmt.Sprintf("starting etcd: %d members, clients with mTLS", etcdMembers))
	if err := st.planEtcd(); err != nil {
		return nil, err
	}
	if err := st.startEtcd(ctx); err != nil {
		return nil, err
	}
	p.done(strings.Join(st.etcdEndpoints(), ", "))
	p.step(fmt.Sprintf("starting %d hub replicas on etcd", hubReplicas))
	conn, err := st.startHubReplicas(ctx, host)
	if err != nil {
		return nil, err
	}
	p.done("hubs at " + st.Hub.Addr)
	return conn, nil
}

// startHubAndWait starts the hub and returns an admin connection once it
// serves.
func (st *State) startHubAndWait(ctx context.Context, bin, hubHost string) (*grpc.ClientConn, error) {
	hubDir := filepath.Join(st.Dir, "hub")
	st.Hub = Process{Addr: st.freeAddr(hubHost), Gossip: st.freeAddr(hubHost), Bundles: st.freeAddr(hubHost), DataDir: hubDir, Log: filepath.Join(st.Dir, "hub.log")}
	st.Credential = filepath.Join(hubDir, hub.AdminCredFile)
	if err := st.StartHub(bin); err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	if err := waitFile(ctx, st.Credential, "the hub", st.Hub); err != nil {
		return nil, err
	}
	conn, err := membership.Dial(st.Hub.Addr, st.Credential, filepath.Join(hubDir, membership.CAFile))
	if err != nil {
		return nil, err
	}
	if err := waitServing(ctx, conn, "the hub", st.Hub); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// joinClusters joins every cluster with a one-time token and plans its
// addresses and config directory.
func (st *State) joinClusters(ctx context.Context, conn *grpc.ClientConn, cs []cluster) error {
	for i, c := range cs {
		cdir := filepath.Join(st.Dir, c.Name)
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		tok, err := hubpb.NewHubClient(conn).CreateToken(tctx, &hubpb.CreateTokenRequest{Cluster: c.Name, TtlSeconds: 600})
		cancel()
		if err != nil {
			return fmt.Errorf("lab: token for %s: %w", c.Name, err)
		}
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ms, err := membership.Join(jctx, tok.GetToken())
		cancel()
		if err != nil {
			return fmt.Errorf("lab: join %s: %w", c.Name, err)
		}
		if err := ms.Save(cdir); err != nil {
			return err
		}
		cfg := filepath.Join(cdir, "config")
		if err := os.MkdirAll(cfg, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cfg, "coffeeshop.yaml"), []byte(coffeeShop(c)), 0o644); err != nil {
			return err
		}
		gateway := st.freeAddr(st.ip(1))
		if st.Isolate {
			// Private addresses are free in a new namespace; only the
			// gateway listens on the shared network.
			gateway = net.JoinHostPort(sharedIP(i), GatewayPort)
		}
		st.Clusters = append(st.Clusters, ClusterState{
			// Each control plane's API on an address of its own: its
			// serving name, which the hub gives to one cluster only.
			Process: Process{Addr: st.freeAddr(st.ip(firstControlPlaneIP + i)), Gossip: st.freeAddr(st.ip(1)), DataDir: cdir, Log: filepath.Join(st.Dir, c.Name+".log")},
			Metrics: st.freeAddr(st.ip(1)),
			Name:    c.Name, Network: c.Network, Locality: c.Locality, ConfigDir: cfg,
			Gateway: GatewayState{Addr: gateway, Health: st.freeAddr(st.ip(1)), Log: filepath.Join(st.Dir, c.Name+"-gateway.log")},
		})
	}
	return nil
}

// startControlPlanes starts every cluster's control plane.
func (st *State) startControlPlanes(bin string) error {
	var err error
	for i := range st.Clusters {
		c := &st.Clusters[i]
		args := append([]string{"controlplane", "--cluster", c.Name, "--network", c.Network, "--locality", c.Locality,
			"--data-dir", c.DataDir, "--config-dir", c.ConfigDir, "--listen", c.Addr, "--gossip", c.Gossip,
			"--gateway", c.Gateway.Addr, "--serving-name", hostOf(c.Addr)}, st.commonArgs(c.Metrics)...)
		c.PID, err = st.startIn(c.Name, bin, c.Log, args...)
		if err != nil {
			return err
		}
		if err := st.save(); err != nil {
			return err
		}
	}
	return nil
}

// startGateways starts every cluster's gateway once its control plane
// wrote the gateway's SVID, and waits until all are ready.
func (st *State) startGateways(ctx context.Context) error {
	for i := range st.Clusters {
		c := &st.Clusters[i]
		// The control plane writes the gateway's first SVID once it serves.
		if err := waitFile(ctx, filepath.Join(c.DataDir, "gateway.pem"), c.Name+"'s control plane", c.Process); err != nil {
			return err
		}
		if err := st.startGateway(c); err != nil {
			return err
		}
	}
	for _, c := range st.Clusters {
		if err := waitReady(ctx, st.httpClient(c.Name), "http://"+c.Gateway.Health+"/healthz/ready", c.Name+"'s gateway", c.Gateway); err != nil {
			return err
		}
	}
	return nil
}

// startCoffeeShop starts every app with its sidecar and waits until every
// cluster sees every instance healthy.
func (st *State) startCoffeeShop(ctx context.Context) error {
	for i := range st.Workloads {
		if err := st.startWorkload(ctx, &st.Workloads[i]); err != nil {
			return err
		}
		if err := st.save(); err != nil {
			return err
		}
	}
	if err := st.waitWorkloads(ctx); err != nil {
		return err
	}
	return nil
}
