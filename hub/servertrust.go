package hub

import (
	"context"
	"encoding/binary"
	"strings"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const metaExternalPrefix = "external/"

// BundleAddr returns the bundle endpoint's address, if it serves one.
func (s *Server) BundleAddr() string {
	if s.bundleLis == nil {
		return ""
	}
	return s.bundleLis.Addr().String()
}

// Bundles returns the members' bundles as the hub holds them.
func (s *Server) Bundles() *trust.BundleSet { return s.bundles }

// loadTrustState restores removals and imported bundles, and prepares an
// importer per external trust domain.
func (s *Server) loadTrustState(ctx context.Context) error {
	var recs []registry.Verified
	for _, c := range s.set.Clusters() {
		for _, e := range s.set.Entries(c) {
			if e.Info != nil {
				recs = append(recs, registry.Verified{Record: &registry.Record{Cluster: c, Body: infoBody(e.Info)}})
			}
		}
	}
	registry.ApplyBundles(s.bundles, s.set, recs, s.log)
	err := s.backend.ForEach(ctx, store.BucketMeta, func(key string, value []byte) error {
		if cluster, ok := strings.CutPrefix(key, store.MetaRemovedPrefix); ok && len(value) == 8 {
			at := time.Unix(0, int64(binary.BigEndian.Uint64(value)))
			s.removed[cluster] = at
			s.verifier.Revoke(cluster, at)
		}
		if name, ok := strings.CutPrefix(key, metaExternalPrefix); ok {
			if td, err := spiffeid.TrustDomainFromString(name); err == nil {
				if b, err := trust.ParseBundle(td, value); err == nil {
					_, _ = s.external.Update(b)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	meshBundle := trust.Bundle(s.td, s.ca.Cert)
	for _, ext := range s.cfg.External {
		if err := ext.Validate(); err != nil {
			return err
		}
		im := &importer{ext: ext, set: s.external, now: s.cfg.Now, log: s.log.With("trust_domain", ext.TrustDomain, "url", ext.URL)}
		if ext.EndpointID.MemberOf(ext.TrustDomain) {
			im.auth = trust.NewBundleSet()
			if held, err := s.external.GetBundleForTrustDomain(ext.TrustDomain); err == nil {
				_, _ = im.auth.Update(held) // the latest fetched bundle, per the spec
			} else {
				_, _ = im.auth.Update(ext.Bundle)
			}
		} else {
			im.authSource = trust.UnionBundles{meshBundle, s.bundles, s.external}
		}
		im.onUpdate = s.externalUpdated
		s.importers = append(s.importers, im)
	}
	return nil
}

// externalUpdated persists an imported bundle and relays it.
func (s *Server) externalUpdated(b *spiffebundle.Bundle) {
	data, err := b.Marshal()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), membership.CallTimeout)
	defer cancel()
	if err := s.write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaExternalPrefix + b.TrustDomain().Name(), Value: data}); err != nil {
		s.log.Error("store external bundle", "trust_domain", b.TrustDomain(), "err", err)
	}
	s.broadcast(&hubpb.SubscribeResponse{ExternalBundles: []*hubpb.ExternalBundle{{TrustDomain: b.TrustDomain().Name(), Bundle: data}}}, "")
}

func (s *Server) externalBundles() []*hubpb.ExternalBundle {
	var out []*hubpb.ExternalBundle
	for _, td := range s.external.TrustDomains() {
		b, err := s.external.GetBundleForTrustDomain(td)
		if err != nil {
			continue
		}
		if data, err := b.Marshal(); err == nil {
			out = append(out, &hubpb.ExternalBundle{TrustDomain: td.Name(), Bundle: data})
		}
	}
	return out
}

// externalStatus describes every imported trust domain, in flag order.
func (s *Server) externalStatus() []*hubpb.ExternalTrustDomain {
	out := make([]*hubpb.ExternalTrustDomain, 0, len(s.importers))
	for _, im := range s.importers {
		out = append(out, im.status())
	}
	return out
}

func (s *Server) removals() []*hubpb.Removal {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	out := make([]*hubpb.Removal, 0, len(s.removed))
	for c, at := range s.removed {
		out = append(out, &hubpb.Removal{Cluster: c, RemovedAt: at.UnixNano()})
	}
	return out
}
