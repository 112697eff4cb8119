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

// CheckBundles refuses records whose bundle would regress what bundles
// holds. A record of a new incarnation of its cluster (one that lost its
// store and started over with a new root) replaces the bundle whatever its
// sequence: the incarnation wins, as it does for the records.
func CheckBundles(bundles *trust.BundleSet, slices *Set, recs []Verified) error {
	for _, v := range recs {
		b, err := InfoBundle(v.Record.GetInfo())
		if err != nil {
			return err
		}
		if b == nil || newIncarnation(slices, v.Record) {
			continue
		}
		if _, err := bundles.Check(b); err != nil {
			return fmt.Errorf("cluster %q: %w", v.Record.GetCluster(), err)
		}
	}
	return nil
}

// ApplyBundles stores the bundles of records about to be applied to
// slices (call it before Set.Apply); errors were ruled out by CheckBundles,
// or are logged for records already on disk.
func ApplyBundles(bundles *trust.BundleSet, slices *Set, recs []Verified, log *slog.Logger) (changed bool) {
	for _, v := range recs {
		b, err := InfoBundle(v.Record.GetInfo())
		if err != nil || b == nil {
			continue
		}
		if newIncarnation(slices, v.Record) {
			changed = bundles.Replace(b) || changed
			continue
		}
		c, err := bundles.Update(b)
		if err != nil {
			log.Warn("bundle not applied", "cluster", v.Record.GetCluster(), "err", err)
		}
		changed = changed || c
	}
	return changed
}

// newIncarnation reports whether rec starts a newer incarnation of its
// cluster than slices holds.
func newIncarnation(slices *Set, rec *Record) bool {
	held := slices.Version(rec.GetCluster())
	return held != nil && rec.GetVersion().GetIncarnation() > held.GetIncarnation()
}
