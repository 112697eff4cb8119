package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// hubReplicas is how many hub replicas 'lab up --ha' runs.
const hubReplicas = 3

// HubReplica is one hub replica of an HA lab, as lab.json records it.
type HubReplica struct {
	Address string `json:"address"`
	PID     int    `json:"pid"`
	Gossip  string `json:"gossip"`
	Bundles string `json:"bundles"`
	DataDir string `json:"dataDir"`
	Log     string `json:"log"`
}

// startHubReplicas starts the hub replicas on the lab's etcd, all with the
// one CA file, and returns an admin connection over every replica once
// each serves and is listed in etcd, so that tokens name them all.
func (st *State) startHubReplicas(ctx context.Context, host string) (*grpc.ClientConn, error) {
	st.CAFile = filepath.Join(st.Dir, "mesh-ca.pem")
	if _, err := hub.CreateCAFile(st.Mesh, st.CAFile, time.Now()); err != nil {
		return nil, err
	}
	st.Hubs = nil
	var addrs []string
	for i := range hubReplicas {
		name := fmt.Sprintf("hub-%d", i+1)
		r := HubReplica{Address: st.freeAddr(host), Gossip: st.freeAddr(host), Bundles: st.freeAddr(host),
			DataDir: filepath.Join(st.Dir, name), Log: filepath.Join(st.Dir, name+".log")}
		st.Hubs = append(st.Hubs, r)
		addrs = append(addrs, r.Address)
	}
	// The single-hub fields name the first replica, with every replica's
	// address: clients given that list fail over between them.
	first := st.Hubs[0]
	st.Hub = Process{Addr: strings.Join(addrs, ","), Gossip: first.Gossip, Bundles: first.Bundles, DataDir: first.DataDir, Log: first.Log}
	st.Credential = filepath.Join(first.DataDir, hub.AdminCredFile)
	for i := range st.Hubs {
		if err := st.StartHubReplica(i); err != nil {
			return nil, err
		}
	}
	for i := range st.Hubs {
		if err := st.waitHubReplica(ctx, i); err != nil {
			return nil, err
		}
	}
	if err := st.waitReplicasListed(ctx); err != nil {
		return nil, err
	}
	return membership.Dial(st.Hub.Addr, st.Credential, filepath.Join(first.DataDir, membership.CAFile))
}

// StartHubReplica starts hub replica i on its recorded addresses (again,
// after it was killed).
func (st *State) StartHubReplica(i int) error {
	r := &st.Hubs[i]
	pki := st.etcdPKI()
	args := append([]string{"hub", "--listen", r.Address, "--gossip", r.Gossip, "--bundle-listen", r.Bundles,
		"--data-dir", r.DataDir, "--mesh", st.Mesh, "--store", "etcd", "--etcd-endpoints", strings.Join(st.etcdEndpoints(), ","),
		"--etcd-cert", pki.clientCert, "--etcd-key", pki.clientKey, "--etcd-ca", pki.caFile, "--ca-file", st.CAFile}, st.commonArgs("")...)
	pid, err := start(st.Binary, r.Log, args...)
	if err != nil {
		return err
	}
	r.PID = pid
	if i == 0 {
		st.Hub.PID = pid
	}
	return st.save()
}

// waitHubReplica waits until replica i serves its own address.
func (st *State) waitHubReplica(ctx context.Context, i int) error {
	r := st.Hubs[i]
	p := Process{PID: r.PID, Addr: r.Address, Log: r.Log}
	what := fmt.Sprintf("hub replica %d", i+1)
	cred := filepath.Join(r.DataDir, hub.AdminCredFile)
	if err := waitFile(ctx, cred, what, p); err != nil {
		return err
	}
	conn, err := membership.Dial(r.Address, cred, filepath.Join(r.DataDir, membership.CAFile))
	if err != nil {
		return err
	}
	defer conn.Close()
	return waitServing(ctx, conn, what, p)
}

// waitReplicasListed waits until etcd lists every replica as serving.
func (st *State) waitReplicasListed(ctx context.Context) error {
	cli, err := st.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	prefix := hub.DefaultEtcdPrefix + store.BucketMeta + "/replicas/"
	return poll(ctx, 100*time.Millisecond, func(ctx context.Context) string {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := cli.Get(gctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Sprintf("etcd does not answer: %v", err)
		}
		if resp.Count < int64(len(st.Hubs)) {
			return fmt.Sprintf("etcd lists %d of %d hub replicas under %s", resp.Count, len(st.Hubs), prefix)
		}
		return ""
	}, st.hubsExited)
}

func (st *State) hubsExited() error {
	for i, r := range st.Hubs {
		if !alive(r.PID) {
			return exitError(fmt.Sprintf("hub replica %d", i+1), r.Log)
		}
	}
	return nil
}

// killHubReplica stops replica i with SIGKILL, as a crash would.
func (st *State) killHubReplica(i int) error {
	pid := st.Hubs[i].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("lab: kill hub replica %d (%d): %w", i+1, pid, err)
	}
	for alive(pid) {
		time.Sleep(10 * time.Millisecond) // polling another process's exit
	}
	return nil
}

// hubReplicaAt returns the index of the replica listening at addr, or -1.
func (st *State) hubReplicaAt(addr string) int {
	for i, r := range st.Hubs {
		if r.Address == addr {
			return i
		}
	}
	return -1
}
