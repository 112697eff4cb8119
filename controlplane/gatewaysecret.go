package controlplane

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/kube"
	"github.com/federate/federate/trust"
)

// DefaultGatewaySecret is the Secret the east-west gateway's Deployment
// mounts: its SVID (GatewayCredentialFile) and the mesh CA (ca.pem).
const DefaultGatewaySecret = "federate-gateway"

// gatewaySecretRecheck bounds the wait between two looks at the gateway
// Secret when its watch brings no event: a watch the RBAC refuses still
// leaves the Secret put right within minutes.
const gatewaySecretRecheck = 5 * time.Minute

// errForeignGatewaySecret is returned for a gateway Secret that the
// control plane did not create: it is someone else's and is left alone.
var errForeignGatewaySecret = errors.New("was not created by the control plane (no " + kube.ManagedByLabel + "=" + kube.ManagedBy + " label), so it is left untouched: delete it, or pass another name with --gateway-secret")

func (k *Kube) gatewaySecretName() string { return cmp.Or(k.GatewaySecret, DefaultGatewaySecret) }

// keepGatewaySecret keeps the gateway Secret holding a valid gateway SVID
// and the mesh CA until ctx ends: the gateway runs in its own Pod, which
// cannot read the control plane's volume. Only the leader runs it. The
// Secret is watched, so that a deleted or edited one is put right at once
// rather than at the SVID's renew point. Failed writes are retried with
// the common backoff.
func (k *Kube) keepGatewaySecret(ctx context.Context, m *member.Member, ttl time.Duration, log *slog.Logger) {
	ref := k.Namespace + "/" + k.gatewaySecretName()
	changed := make(chan struct{}, 1)
	stop := k.watchGatewaySecret(changed, log)
	defer stop()
	backoff := retry.New(time.Second, time.Minute)
	for {
		renewAt, err := k.syncGatewaySecret(ctx, m, ttl, log)
		wait := min(time.Until(renewAt), gatewaySecretRecheck)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = backoff.Next()
			log.Error("keep the gateway Secret; retrying", "secret", ref, "retry_in", wait, "err", err)
		} else {
			backoff.Reset()
		}
		if !retry.Sleep(ctx, max(wait, 0), changed) {
			return
		}
	}
}

// watchGatewaySecret signals changed whenever the gateway Secret is
// created, edited or deleted (our own writes included: a look at a Secret
// that is right costs one read) until stop is called.
func (k *Kube) watchGatewaySecret(changed chan<- struct{}, log *slog.Logger) (stop func()) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.Client, 0, informers.WithNamespace(k.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", k.gatewaySecretName()).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	var warned sync.Once
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		warned.Do(func() {
			log.Warn("cannot watch the gateway Secret: it is checked every "+gatewaySecretRecheck.String()+" instead; grant list and watch on it (see deploy/controlplane/rbac.yaml)",
				"secret", k.Namespace+"/"+k.gatewaySecretName(), "err", err)
		})
	})
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	})
	done := make(chan struct{})
	factory.Start(done)
	return func() {
		close(done)
		factory.Shutdown()
	}
}

// syncGatewaySecret creates or rewrites the gateway Secret when it is
// missing, holds no valid gateway SVID, has passed the SVID's renew point or
// holds another mesh CA. It returns the renew point of the SVID it holds.
func (k *Kube) syncGatewaySecret(ctx context.Context, m *member.Member, ttl time.Duration, log *slog.Logger) (time.Time, error) {
	name := k.gatewaySecretName()
	secrets := k.Client.CoreV1().Secrets(k.Namespace)
	ca := trust.EncodeCertificates(m.MeshCA()...)
	gateway := spiffeid.RequireFromPath(m.Authority().TrustDomain(), GatewayPath)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur = nil
	case err != nil:
		return time.Time{}, fmt.Errorf("read the gateway Secret: %w", err)
	case cur.Labels[kube.ManagedByLabel] != kube.ManagedBy:
		return time.Time{}, fmt.Errorf("gateway Secret %s/%s %w", k.Namespace, name, errForeignGatewaySecret)
	default:
		renewAt, ok := heldSVID(cur.Data[GatewayCredentialFile], gateway)
		if ok && time.Now().Before(renewAt) && bytes.Equal(cur.Data[membership.CAFile], ca) {
			return renewAt, nil
		}
	}
	cred, err := m.Authority().IssueCredential(gateway, ttl)
	if err != nil {
		return time.Time{}, fmt.Errorf("issue the gateway SVID: %w", err)
	}
	pemData, err := cred.MarshalPEM()
	if err != nil {
		return time.Time{}, err
	}
	data := map[string][]byte{GatewayCredentialFile: pemData, membership.CAFile: ca}
	if cur == nil {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.Namespace, Labels: map[string]string{kube.ManagedByLabel: kube.ManagedBy}},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}, metav1.CreateOptions{})
	} else {
		cur.Data = data
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("write the gateway Secret: %w", err)
	}
	log.Info("wrote the gateway Secret", "secret", k.Namespace+"/"+name, "id", gateway, "serial", cred.Leaf().SerialNumber, "expires", cred.Expiry())
	return trust.RenewAt(cred.Leaf()), nil
}

// heldSVID returns the renew point of the gateway SVID in data, and whether
// data holds one for id.
func heldSVID(data []byte, id spiffeid.ID) (time.Time, bool) {
	if len(data) == 0 {
		return time.Time{}, false
	}
	dir, err := os.MkdirTemp("", "federate-gateway-")
	if err != nil {
		return time.Time{}, false
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, GatewayCredentialFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return time.Time{}, false
	}
	cred, err := trust.LoadCredential(path)
	if err != nil || cred.ID() != id {
		return time.Time{}, false
	}
	return trust.RenewAt(cred.Leaf()), true
}
