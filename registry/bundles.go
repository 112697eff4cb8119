package registry

import (
	"fmt"
	"log/slog"

	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// InfoBundle decodes the bundle a ClusterInfo carries, or returns nil.
func InfoBundle(info *ClusterInfo) (*spiffebundle.Bundle, error) {
	if info == nil || len(info.GetBundle()) == 0 {
		return nil, nil
	}
	td, err := spiffeid.TrustDomainFromString(info.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	return trust.ParseBundle(td, info.GetBundle())
}

// CheckBundles refuses records whose bundle would regress what set holds.
func CheckBundles(set *trust.BundleSet, recs []Verified) error {
	for _, v := range recs {
		b, err := InfoBundle(v.Record.GetInfo())
		if err != nil {
			return err
		}
		if b == nil {
			continue
		}
		if _, err := set.Check(b); err != nil {
			return fmt.Errorf("cluster %q: %w", v.Record.GetCluster(), err)
		}
	}
	return nil
}

// ApplyBundles stores the bundles of applied records; errors were ruled out
// by CheckBundles, or are logged for records already on disk.
func ApplyBundles(set *trust.BundleSet, recs []Verified, log *slog.Logger) (changed bool) {
	for _, v := range recs {
		b, err := InfoBundle(v.Record.GetInfo())
		if err != nil || b == nil {
			continue
		}
		c, err := set.Update(b)
		if err != nil {
			log.Warn("bundle not applied", "cluster", v.Record.GetCluster(), "err", err)
		}
		changed = changed || c
	}
	return changed
}
