package controlplane_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/trust"
)

// lockedBuffer is a log sink written from the control plane's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// In Kubernetes mode the control plane keeps the gateway Secret: a Secret
// of that name it did not create is left untouched, with an error naming
// it; once that one is gone the control plane creates it with a gateway
// SVID of its trust domain and the mesh CA, and rewrites it with a new SVID
// once the one it holds passes its renew point.
func TestIntegrationGatewaySecretKeptCurrent(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t, "east")[0]
	ns := controlplane.DefaultKubeNamespace
	k.EnsureNamespace(t, ns, nil)
	ctx := fedtest.DeadlineContext(t, 3*time.Minute)
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("east")
	kube, ms := saveMembership(ctx, t, tm, k, ns, "east")
	secrets := k.Client.CoreV1().Secrets(ns)
	foreign := map[string][]byte{"gateway.pem": []byte("someone else's"), "ca.pem": []byte("not ours")}
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controlplane.DefaultGatewaySecret}, Data: foreign}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	logs := &lockedBuffer{}
	const ttl = 8 * time.Second
	east := tm.StartControlPlane("east", controlplane.Config{
		Gateway: "192.0.2.10:15443", Kube: kube, Source: fedtest.NewSource(fedtest.CoffeeService("east", "orders", 2, 8080)),
		MaxSVIDTTL: ttl, Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	fedtest.Eventually(t, 30*time.Second, "an error about the foreign gateway Secret", func() bool {
		return strings.Contains(logs.String(), "gateway Secret "+ns+"/"+controlplane.DefaultGatewaySecret+" was not created by the control plane")
	})
	sec, err := secrets.Get(ctx, controlplane.DefaultGatewaySecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sec.Data["gateway.pem"], foreign["gateway.pem"]) || !bytes.Equal(sec.Data["ca.pem"], foreign["ca.pem"]) || len(sec.Data) != 2 {
		t.Fatalf("the control plane overwrote a gateway Secret it did not create: %q", sec.Data)
	}

	if err := secrets.Delete(ctx, controlplane.DefaultGatewaySecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantID := "spiffe://east.shop" + controlplane.GatewayPath
	roots := x509.NewCertPool()
	for _, r := range east.Member().Authority().Bundle().X509Authorities() {
		roots.AddCert(r)
	}
	first := waitGatewaySVID(ctx, t, k, ns, ms.CA, wantID, nil)
	verifySVID(t, first, roots)
	if got := first.Leaf().NotAfter.Sub(first.Leaf().NotBefore); got > ttl+trust.Backdate {
		t.Errorf("gateway SVID lives %s, more than MaxSVIDTTL %s", got, ttl)
	}
	// Past its renew point the Secret holds a new SVID, itself valid.
	second := waitGatewaySVID(ctx, t, k, ns, ms.CA, wantID, first.Leaf())
	verifySVID(t, second, roots)
	if !time.Now().Before(second.Expiry()) {
		t.Errorf("the rewritten SVID expired at %s", second.Expiry())
	}
}

// waitGatewaySVID waits until the gateway Secret holds an SVID for wantID
// other than old, chaining to the cluster's CA, beside the mesh CA, and
// returns it.
func waitGatewaySVID(ctx context.Context, t *testing.T, k *kubetest.Cluster, ns string, meshCA []*x509.Certificate, wantID string, old *x509.Certificate) *trust.Credential {
	t.Helper()
	var cred *trust.Credential
	fedtest.Eventually(t, 60*time.Second, "a new gateway SVID in the gateway Secret", func() bool {
		sec, err := k.Client.CoreV1().Secrets(ns).Get(ctx, controlplane.DefaultGatewaySecret, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err != nil {
			return false
		}
		if !bytes.Equal(sec.Data["ca.pem"], trust.EncodeCertificates(meshCA...)) {
			t.Logf("ca.pem is not the mesh CA")
			return false
		}
		path := filepath.Join(t.TempDir(), "gateway.pem")
		if err := os.WriteFile(path, sec.Data["gateway.pem"], 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := trust.LoadCredential(path)
		if err != nil {
			t.Logf("gateway.pem: %v", err)
			return false
		}
		if c.ID().String() != wantID {
			t.Fatalf("gateway SVID is %s, want %s", c.ID(), wantID)
		}
		if old != nil && c.Leaf().SerialNumber.Cmp(old.SerialNumber) == 0 {
			return false
		}
		cred = c
		return true
	})
	return cred
}

// verifySVID checks that the SVID chains to the cluster CA's roots.
func verifySVID(t *testing.T, c *trust.Credential, roots *x509.CertPool) {
	t.Helper()
	svid, err := c.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, ic := range svid.Certificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := c.Leaf().Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("gateway SVID does not chain to the cluster CA: %v", err)
	}
}

// A gateway Secret whose ca.pem is not the mesh CA (the Secret was edited,
// or the cluster joined again) is rewritten well before its SVID's renew
// point, and so is a deleted one.
func TestIntegrationGatewaySecretFollowsMeshCA(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t, "west")[0]
	ns := controlplane.DefaultKubeNamespace
	k.EnsureNamespace(t, ns, nil)
	ctx := fedtest.DeadlineContext(t, 3*time.Minute)
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("west")
	kube, ms := saveMembership(ctx, t, tm, k, ns, "west")
	tm.StartControlPlane("west", controlplane.Config{
		Gateway: "192.0.2.20:15443", Kube: kube, Source: fedtest.NewSource(fedtest.CoffeeService("west", "payment", 2, 9090)),
		MaxSVIDTTL: time.Hour,
	})
	wantID := "spiffe://west.shop" + controlplane.GatewayPath
	first := waitGatewaySVID(ctx, t, k, ns, ms.CA, wantID, nil)

	secrets := k.Client.CoreV1().Secrets(ns)
	sec, err := secrets.Get(ctx, controlplane.DefaultGatewaySecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["ca.pem"] = []byte("a CA of another mesh")
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	second := waitGatewaySVID(ctx, t, k, ns, ms.CA, wantID, first.Leaf())
	if !time.Now().Before(trust.RenewAt(first.Leaf())) {
		t.Fatal("the test ran past the first SVID's renew point: the rewrite proves nothing")
	}

	if err := secrets.Delete(ctx, controlplane.DefaultGatewaySecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGatewaySVID(ctx, t, k, ns, ms.CA, wantID, second.Leaf())
}
