package controlplane

import (
	"bytes"
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/member"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
)

// CAStateKey is the membership Secret's key that holds the cluster CA's
// state (its roots, keys and rotation phase) in the Kubernetes mode, unless
// the CA comes from Istio plug-in files. Each replica has its own store;
// with the state in the Secret, a replica that takes over signs with the
// same root, and a lost volume does not change the cluster's root.
const CAStateKey = "ca-state.json"

// shareCA makes the CA in st the one in the membership Secret: the
// Secret's, when it has one; else the store's, or a new one, which it
// writes into the Secret before anything is signed with it.
func (k *Kube) shareCA(ctx context.Context, st *store.Store, td spiffeid.TrustDomain) error {
	secrets := k.Client.CoreV1().Secrets(k.Namespace)
	sec, err := secrets.Get(ctx, k.Secret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("controlplane: read the membership Secret %s: %w", k.secretRef(), err)
	}
	if data := sec.Data[CAStateKey]; len(data) > 0 {
		if _, err := trust.LoadAuthority(td, data, nil); err != nil {
			return fmt.Errorf("controlplane: membership Secret %s, key %s: %w; remove the key to start a new cluster CA (every workload then needs a new certificate)", k.secretRef(), CAStateKey, err)
		}
		return st.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: member.AuthorityKey, Value: data})
	}
	data, err := st.Get(store.BucketMeta, member.AuthorityKey)
	if err != nil {
		return err
	}
	if data == nil {
		a, err := trust.NewAuthority(td, nil)
		if err != nil {
			return err
		}
		if data, err = a.Marshal(); err != nil {
			return err
		}
		if err := st.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: member.AuthorityKey, Value: data}); err != nil {
			return err
		}
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[CAStateKey] = data
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("controlplane: save the cluster CA in the membership Secret %s: %w", k.secretRef(), err)
	}
	return nil
}

// syncCA copies a CA state that changed in st (a root rotation) into
// sec, and reports whether it did.
func syncCA(st *store.Store, data map[string][]byte) (bool, error) {
	now, err := st.Get(store.BucketMeta, member.AuthorityKey)
	if err != nil || now == nil || bytes.Equal(now, data[CAStateKey]) {
		return false, err
	}
	data[CAStateKey] = now
	return true, nil
}
