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
	clientv3 "go.etcd.io/etcd/client/v3"
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

// checkEtcd refuses a prefix holding anything but this federation's
// state, naming the first key that is not, before the hub writes there;
// then it marks the prefix as this federation's.
func (s *Server) checkEtcd(ctx context.Context, eb *etcdBackend) error {
	ctx, cancel := context.WithTimeout(ctx, 4*etcdTimeout)
	defer cancel()
	resp, err := eb.cli.Get(ctx, eb.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return eb.unavailable("read", err)
	}
	for _, kv := range resp.Kvs {
		bucket, key, ok := eb.split(string(kv.Key))
		if !ok {
			err = errors.New("it is in none of the hub's buckets (records/, meta/, tokens/)")
		} else {
			err = s.checkValue(bucket, key, kv.Value)
		}
		if err != nil {
			return fmt.Errorf("hub: etcd key %q under prefix %s is not this federation's: %v; nothing was written: remove it, or give this federation its own --etcd-prefix", kv.Key, eb.cfg.Prefix, err)
		}
	}
	mark, _ := json.Marshal(federationMarker{Mesh: s.cfg.Mesh, CA: trust.Fingerprint(s.ca.Cert)})
	if _, err := eb.WriteIf(ctx, store.BucketMeta, metaFederation, nil, store.Op{Bucket: store.BucketMeta, Key: metaFederation, Value: mark}); err != nil {
		return err
	}
	return nil
}

// checkValue says what is wrong with one stored value, if anything.
func (s *Server) checkValue(bucket, key string, value []byte) error {
	switch bucket {
	case store.BucketRecords:
		_, err := decodeRecord(key, value)
		return err
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
