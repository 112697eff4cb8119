package lab

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdOptions configure one member of the lab's etcd ('federate lab etcd').
type EtcdOptions struct {
	Name    string
	DataDir string
	// Client is the member's client URL (https: clients authenticate with
	// a certificate of CAFile); Peer its peer URL (http, on loopback).
	Client, Peer string
	// InitialCluster is every member as name=peer-URL, comma-separated.
	InitialCluster            string
	CertFile, KeyFile, CAFile string
	// LogLevel and LogFormat are the lab's (info or debug; text or json).
	LogLevel, LogFormat string
}

// RunEtcd runs one etcd member, etcd's own server embedded, until ctx ends
// or the server fails.
func RunEtcd(ctx context.Context, opts EtcdOptions) error {
	client, err := url.Parse(opts.Client)
	if err != nil {
		return fmt.Errorf("lab: etcd client URL %q: %w", opts.Client, err)
	}
	peer, err := url.Parse(opts.Peer)
	if err != nil {
		return fmt.Errorf("lab: etcd peer URL %q: %w", opts.Peer, err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = opts.Name, opts.DataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster, cfg.InitialClusterToken = opts.InitialCluster, "federate-lab"
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: opts.CertFile, KeyFile: opts.KeyFile, TrustedCAFile: opts.CAFile, ClientCertAuth: true}
	// etcd's info lines (every raft step) would drown the lab's logs.
	cfg.LogLevel = "warn"
	if opts.LogLevel == "debug" {
		cfg.LogLevel = "info"
	}
	if opts.LogFormat == "text" {
		cfg.LogFormat = "console"
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("lab: start etcd member %s: %w", opts.Name, err)
	}
	defer e.Close()
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("lab: etcd member %s: %w", opts.Name, err)
	}
}

// EtcdMember is one member of the lab's etcd, as lab.json records it.
type EtcdMember struct {
	Name string `json:"name"`
	// Address is the member's client URL.
	Address string `json:"address"`
	Peer    string `json:"peer"`
	PID     int    `json:"pid"`
	DataDir string `json:"dataDir"`
	Log     string `json:"log"`
}

// etcdMembers is how many members the lab's etcd has: a quorum survives
// one member's loss.
const etcdMembers = 3

// etcdDir holds the etcd members' data and the lab's etcd PKI.
func (st *State) etcdDir() string { return filepath.Join(st.Dir, "etcd") }

// planEtcd chooses every member's addresses and writes the PKI.
func (st *State) planEtcd() error {
	if err := newEtcdPKI(st.etcdDir(), st.ip(1)); err != nil {
		return err
	}
	st.Etcd = nil
	for i := range etcdMembers {
		name := fmt.Sprintf("etcd-%d", i+1)
		st.Etcd = append(st.Etcd, EtcdMember{Name: name,
			Address: "https://" + st.freeAddr(st.ip(1)), Peer: "http://" + st.freeAddr(st.ip(1)),
			DataDir: filepath.Join(st.etcdDir(), name), Log: filepath.Join(st.Dir, name+".log")})
	}
	return st.save()
}

// startEtcd starts every member and returns once the cluster commits a
// write.
func (st *State) startEtcd(ctx context.Context) error {
	for i := range st.Etcd {
		if err := st.StartEtcdMember(i); err != nil {
			return err
		}
	}
	cli, err := st.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return poll(ctx, 100*time.Millisecond, func(ctx context.Context) string {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := cli.Put(pctx, "/federate-lab/ready", "yes"); err != nil {
			return fmt.Sprintf("etcd commits no write: %v (see %s)", err, st.Etcd[0].Log)
		}
		return ""
	}, st.etcdExited)
}

// StartEtcdMember starts member i on its recorded addresses and data
// (again, after it was killed).
func (st *State) StartEtcdMember(i int) error {
	m := &st.Etcd[i]
	var initial []string
	for _, o := range st.Etcd {
		initial = append(initial, o.Name+"="+o.Peer)
	}
	pki := st.etcdPKI()
	args := []string{"lab", "etcd", "--name", m.Name, "--data-dir", m.DataDir, "--client-url", m.Address, "--peer-url", m.Peer,
		"--initial-cluster", strings.Join(initial, ","), "--cert", pki.serverCert, "--key", pki.serverKey, "--ca", pki.caFile}
	args = append(args, st.logArgs()...)
	pid, err := start(st.Binary, m.Log, args...)
	if err != nil {
		return err
	}
	m.PID = pid
	return st.save()
}

func (st *State) etcdExited() error {
	for _, m := range st.Etcd {
		if !alive(m.PID) {
			return exitError("etcd member "+m.Name, m.Log)
		}
	}
	return nil
}

func (st *State) etcdEndpoints() []string {
	var out []string
	for _, m := range st.Etcd {
		out = append(out, m.Address)
	}
	return out
}

// etcdClient is a client of the whole etcd with the hubs' certificate.
func (st *State) etcdClient() (*clientv3.Client, error) {
	pki := st.etcdPKI()
	tlsConf, err := (transport.TLSInfo{CertFile: pki.clientCert, KeyFile: pki.clientKey, TrustedCAFile: pki.caFile}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("lab: etcd client certificate: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: st.etcdEndpoints(), TLS: tlsConf, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("lab: etcd client: %w", err)
	}
	return cli, nil
}

// etcdLeader returns the index of the member that leads, asking each
// member's maintenance Status.
func (st *State) etcdLeader(ctx context.Context, cli *clientv3.Client) (int, error) {
	var errs []string
	for i, m := range st.Etcd {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := cli.Status(sctx, m.Address)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", m.Name, err))
			continue
		}
		if resp.Leader != 0 && resp.Leader == resp.Header.GetMemberId() {
			return i, nil
		}
	}
	return -1, fmt.Errorf("lab: no etcd member says it leads (%s)", strings.Join(errs, "; "))
}

// etcdHealthy reports whether member i answers its Status and knows a
// leader.
func (st *State) etcdHealthy(ctx context.Context, cli *clientv3.Client, i int) bool {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := cli.Status(sctx, st.Etcd[i].Address)
	return err == nil && resp.Leader != 0
}

// killEtcdMember stops member i with SIGKILL, as a crash would.
func (st *State) killEtcdMember(i int) error {
	pid := st.Etcd[i].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("lab: kill etcd member %s (%d): %w", st.Etcd[i].Name, pid, err)
	}
	for alive(pid) {
		time.Sleep(10 * time.Millisecond) // polling another process's exit
	}
	return nil
}
