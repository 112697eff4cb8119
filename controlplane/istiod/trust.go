package istiod

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RootConfigMap is the ConfigMap istiod writes into every namespace with
// the root its sidecars trust, under RootConfigMapKey.
const (
	RootConfigMap    = "istio-ca-root-cert"
	RootConfigMapKey = "root-cert.pem"
)

// ErrTrustMismatch says istiod's sidecars do not trust federate's root.
var ErrTrustMismatch = errors.New("istiod: istiod's root is not federate's")

// CheckTrust compares the root istiod gives its sidecars (RootConfigMap in
// the writer's namespace) with federate's roots. In the shared-root mode
// (docs/istio.md) istiod and federate use the same plug-in cacerts, so
// every root istiod publishes is one of federate's: then sidecars accept
// the other clusters' SVIDs, and the other clusters accept theirs. It
// returns nil while istiod has not published its root yet.
func (w *Writer) CheckTrust(ctx context.Context, federate []*x509.Certificate) error {
	cm, err := w.cfg.Kube.CoreV1().ConfigMaps(w.cfg.Namespace).Get(ctx, RootConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("istiod: read istiod's root (ConfigMap %s/%s): %w", w.cfg.Namespace, RootConfigMap, err)
	}
	roots, err := parseCertificates([]byte(cm.Data[RootConfigMapKey]))
	if err != nil {
		return fmt.Errorf("istiod: ConfigMap %s/%s: %w", w.cfg.Namespace, RootConfigMap, err)
	}
	for _, r := range roots {
		found := false
		for _, f := range federate {
			found = found || r.Equal(f)
		}
		if !found {
			return fmt.Errorf("%w: the sidecars trust %q, which federate's trust bundle lacks, so remote clusters refuse their SVIDs and they refuse remote ones; "+
				"give istiod and 'federate controlplane --cacerts' the same plug-in CA files (the cacerts Secret in istio-system), "+
				"or add the remote roots to meshConfig.caCertificates (docs/istio.md)", ErrTrustMismatch, r.Subject)
		}
	}
	return nil
}

func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no certificate under %s", RootConfigMapKey)
	}
	return out, nil
}
