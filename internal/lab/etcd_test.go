package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The lab's etcd answers only clients with a certificate of its own CA:
// one with none, or with another lab's certificate of the same name, is
// refused.
func TestEtcdRefusesClientsWithoutTheLabCertificate(t *testing.T) {
	st, other := &State{Dir: t.TempDir()}, &State{Dir: t.TempDir()}
	for _, s := range []*State{st, other} {
		if err := newEtcdPKI(s.etcdDir(), "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	pki, foreign := st.etcdPKI(), other.etcdPKI()
	client, peer := "https://"+testport.Addr(t), "http://"+testport.Addr(t)
	ctx, stop := context.WithCancel(fedtest.DeadlineContext(t, time.Minute))
	done := make(chan error, 1)
	go func() {
		done <- RunEtcd(ctx, EtcdOptions{Name: "etcd-1", DataDir: t.TempDir(), Client: client, Peer: peer,
			InitialCluster: "etcd-1=" + peer, CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.caFile})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("etcd: %v", err)
		}
	})
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(pki.caFile)
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("read the lab's etcd CA: %v", err)
	}
	put := func(certFile, keyFile string) error {
		conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if certFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			conf.Certificates = []tls.Certificate{cert}
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, TLS: conf, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = cli.Put(pctx, "/federate-lab/probe", "x")
		return err
	}

	fedtest.EventuallyNil(t, 30*time.Second, "etcd to accept the lab's client certificate", func() error { return put(pki.clientCert, pki.clientKey) })
	for name, files := range map[string][2]string{
		"no certificate":                     {"", ""},
		"another lab's hub certificate":      {foreign.clientCert, foreign.clientKey},
		"another lab's member's certificate": {foreign.serverCert, foreign.serverKey},
	} {
		if err := put(files[0], files[1]); err == nil {
			t.Errorf("etcd accepted a client with %s", name)
		}
	}
}
