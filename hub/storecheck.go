package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// metaFederation keys, in etcd, which federation the prefix holds: a
// replica of another mesh or with another CA refuses to start on it.
const metaFederation = "federation"

type federationMarker struct {
	Mesh string `json:"mesh"`
	CA   string `json:"ca"` // the CA certificate's fingerprint
}

// decodeRecord decodes a stored record as it was verified when stored.
func decodeRecord(key string, value []byte) (registry.Verified, error) {
	sr := new(registrypb.SignedRecord)
	if err := proto.Unmarshal(value, sr); err != nil {
		return registry.Verified{}, err
	}
	rec := new(registrypb.Record)
	if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
		return registry.Verified{}, err
	}
	if want := store.RecordKey(rec.GetCluster(), rec.GetKey()); key != want {
		return registry.Verified{}, fmt.Errorf("it holds record %q of cluster %q, which belongs under %q", rec.GetKey(), rec.GetCluster(), want)
	}
	return registry.Verified{Record: rec, Signed: sr}, nil
}

// loadRecords reads every stored record, not verified again, the records
// of one signer sharing one copy of its certificate.
func loadRecords(ctx context.Context, b backend) ([]registry.Verified, error) {
	var recs []registry.Verified
	signers := make(registry.SignerCache)
	err := b.ForEach(ctx, store.BucketRecords, func(key string, value []byte) error {
		v, err := decodeRecord(key, value)
		if err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		signers.Intern(v.Signed)
		recs = append(recs, v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hub: load %s: %w", b.Where(), err)
	}
	return recs, nil
}

// loadEtcd reads everything under the prefix once, at one revision, and
// decodes each value once: anything that is not this federation's state
// is refused, naming the first key that is not, before the hub writes
// there; the records are kept to load. Then it marks the prefix as this
// federation's. It returns the records and the revision of the read,
// after which the watch goes on.
func (s *Server) loadEtcd(ctx context.Context, eb *etcdBackend) ([]registry.Verified, int64, error) {
	var recs []registry.Verified
	signers := make(registry.SignerCache)
	rev, err := eb.readAll(ctx, eb.cfg.Prefix, func() { recs = nil }, func(kv *mvccpb.KeyValue) error {
		v, err := s.checkKey(eb, kv)
		if err != nil {
			return fmt.Errorf("hub: etcd key %q under prefix %s is not this federation's: %v; nothing was written: remove it, or give this federation its own --etcd-prefix", kv.Key, eb.cfg.Prefix, err)
		}
		if v.Signed != nil {
			signers.Intern(v.Signed)
			recs = append(recs, v)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	mark, _ := json.Marshal(federationMarker{Mesh: s.cfg.Mesh, CA: trust.Fingerprint(s.ca.Cert)})
	if _, err := eb.WriteIf(ctx, store.BucketMeta, metaFederation, nil, store.Op{Bucket: store.BucketMeta, Key: metaFederation, Value: mark}); err != nil {
		return nil, 0, err
	}
	return recs, rev, nil
}

// checkKey says what is wrong with one key and its value under the
// prefix, if anything; a record comes back decoded.
func (s *Server) checkKey(eb *etcdBackend, kv *mvccpb.KeyValue) (registry.Verified, error) {
	bucket, key, ok := eb.split(string(kv.Key))
	switch {
	case !ok:
		return registry.Verified{}, errors.New("it is in none of the hub's buckets (records/, meta/, tokens/)")
	case bucket == store.BucketRecords:
		return decodeRecord(key, kv.Value)
	default:
		return registry.Verified{}, s.checkValue(bucket, key, kv.Value)
	}
}

// checkValue says what is wrong with one stored value of the tokens or
// meta bucket, if anything.
func (s *Server) checkValue(bucket, key string, value []byte) error {
	switch bucket {
	case store.BucketTokens:
		var rec tokenRecord
		if err := json.Unmarshal(value, &rec); err != nil || len(rec.SecretHash) != len(hashSecret(nil)) {
			return errors.New("it is not a join token")
		}
		return nil
	}
	switch {
	case key == metaFederation:
		var m federationMarker
		if err := json.Unmarshal(value, &m); err != nil {
			return errors.New("it does not name a federation")
		}
		if want := trust.Fingerprint(s.ca.Cert); m.Mesh != s.cfg.Mesh || m.CA != want {
			return fmt.Errorf("it belongs to mesh %q with CA %s, not mesh %q with CA %s (from the CA file)", m.Mesh, m.CA, s.cfg.Mesh, want)
		}
	case strings.HasPrefix(key, store.MetaRemovedPrefix):
		if len(value) != 8 {
			return errors.New("it is not a removal time")
		}
	case strings.HasPrefix(key, metaCredentialPrefix):
		var ic issuedCredential
		if err := json.Unmarshal(value, &ic); err != nil || ic.Serial == "" {
			return errors.New("it is not an issued credential")
		}
	case strings.HasPrefix(key, metaExternalPrefix):
		td, err := spiffeid.TrustDomainFromString(strings.TrimPrefix(key, metaExternalPrefix))
		if err != nil {
			return err
		}
		if _, err := trust.ParseBundle(td, value); err != nil {
			return err
		}
	case strings.HasPrefix(key, metaServingNamePrefix):
		if registry.ValidClusterName(string(value)) != nil {
			return errors.New("it does not name the cluster that holds a serving name")
		}
	case strings.HasPrefix(key, metaReplicaPrefix):
		var r replicaInfo
		if err := json.Unmarshal(value, &r); err != nil || r.API == "" {
			return errors.New("it does not describe a hub replica")
		}
	default:
		return errors.New("the hub keeps no such meta key in etcd")
	}
	return nil
}
