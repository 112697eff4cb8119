package hub

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BundlePath is the path of a trust domain's bundle on the hub's bundle
// endpoint: https://<bundle address>/<trust domain>.
func BundlePath(td spiffeid.TrustDomain) string { return "/" + td.Name() }

// bundleHandler serves each member's SPIFFE bundle at /<trust domain>.
func bundleHandler(src spiffebundle.Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "only GET is served", http.StatusMethodNotAllowed)
			return
		}
		td, err := spiffeid.TrustDomainFromString(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, "path must be /<trust domain>", http.StatusNotFound)
			return
		}
		b, err := src.GetBundleForTrustDomain(td)
		if err != nil {
			http.Error(w, "trust domain is not a member of this federation", http.StatusNotFound)
			return
		}
		data, err := b.Marshal()
		if err != nil {
			http.Error(w, "bundle cannot be encoded", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
}

// serveBundles runs the bundle endpoint until ctx is done.
func serveBundles(ctx context.Context, lis net.Listener, conf *tls.Config, src spiffebundle.Source, log *slog.Logger) error {
	// Failed handshakes (a peer that trusts another profile) are the
	// peer's to report: debug here, not on stderr.
	srv := &http.Server{Handler: bundleHandler(src), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(lis, conf)) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), membership.StopGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		log.Error("bundle endpoint stopped", "err", err)
		return err
	}
}

// Bundle endpoint profiles (SPIFFE Federation).
const (
	ProfileHTTPSSPIFFE = "https_spiffe"
	ProfileHTTPSWeb    = "https_web"
)

// ExternalTrustDomain is a trust domain outside the federation whose bundle
// the hub imports and relays, as SPIRE's FederationRelationship does.
type ExternalTrustDomain struct {
	TrustDomain spiffeid.TrustDomain
	URL         string
	Profile     string
	// EndpointID is the SPIFFE ID the endpoint presents (https_spiffe).
	EndpointID spiffeid.ID
	// Bundle authenticates the first fetch of a self-serving https_spiffe
	// endpoint; later fetches use the latest fetched bundle.
	Bundle *spiffebundle.Bundle
	// Roots for https_web; nil means the system roots.
	Roots *x509.CertPool
	// MaxRefresh, if set, polls at least this often whatever the refresh
	// hint: SPIRE's endpoint never hints less than a minute.
	MaxRefresh time.Duration
}

// Validate checks the three parameters the SPIFFE Federation spec requires.
func (e ExternalTrustDomain) Validate() error {
	if e.TrustDomain.IsZero() || e.URL == "" {
		return errors.New("hub: an external trust domain needs a trust domain and a bundle endpoint URL")
	}
	if !strings.HasPrefix(e.URL, "https://") {
		return fmt.Errorf("hub: bundle endpoint %q must be an https URL", e.URL)
	}
	switch e.Profile {
	case ProfileHTTPSWeb:
	case ProfileHTTPSSPIFFE:
		if e.EndpointID.IsZero() {
			return fmt.Errorf("hub: %s profile for %s needs the endpoint's SPIFFE ID", e.Profile, e.TrustDomain)
		}
		if e.EndpointID.MemberOf(e.TrustDomain) && e.Bundle == nil {
			return fmt.Errorf("hub: self-serving endpoint of %s needs an initial bundle", e.TrustDomain)
		}
	default:
		return fmt.Errorf("hub: bundle endpoint profile %q: want %s or %s", e.Profile, ProfileHTTPSSPIFFE, ProfileHTTPSWeb)
	}
	return nil
}

// importer keeps one external trust domain's bundle current.
type importer struct {
	ext ExternalTrustDomain
	set *trust.BundleSet // where the fetched bundle goes
	// auth holds the endpoint's own trust domain's bundle for a
	// self-serving https_spiffe endpoint; authSource serves otherwise.
	auth       *trust.BundleSet
	authSource x509bundle.Source
	onUpdate   func(*spiffebundle.Bundle)
	log        *slog.Logger // carries trust_domain and url
	now        func() time.Time

	mu       sync.Mutex // guards the fields below
	last     time.Time  // last successful fetch
	next     time.Time  // next fetch
	fetchErr error      // this round's fetch error, or the last one until a fetch succeeds
	refused  error      // the last fetched bundle's refusal, until one is taken
	failed   bool       // this round's fetch failed
}

// run watches the endpoint until ctx is done, polling on the refresh hint.
func (im *importer) run(ctx context.Context) error {
	var opts []federation.FetchOption
	if im.ext.Profile == ProfileHTTPSSPIFFE {
		var src x509bundle.Source = im.auth
		if im.auth == nil {
			src = im.authSource
		}
		opts = append(opts, federation.WithSPIFFEAuth(src, im.ext.EndpointID))
	} else if im.ext.Roots != nil {
		opts = append(opts, federation.WithWebPKIRoots(im.ext.Roots))
	}
	err := federation.WatchBundle(ctx, im.ext.TrustDomain, im.ext.URL, im, opts...)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// NextRefresh polls at the hint, within sane bounds; the spec's default is
// five minutes. WatchBundle calls it after every fetch, so it also closes
// the round for status.
func (im *importer) NextRefresh(hint time.Duration) time.Duration {
	d := trust.DefaultRefreshHint
	if hint > 0 {
		d = min(max(hint, time.Second), time.Hour)
	}
	if im.ext.MaxRefresh > 0 {
		d = min(d, max(im.ext.MaxRefresh, time.Second))
	}
	now := im.now()
	im.mu.Lock()
	defer im.mu.Unlock()
	if !im.failed {
		im.last, im.fetchErr = now, nil
	}
	im.failed, im.next = false, now.Add(d)
	return d
}

func (im *importer) OnUpdate(b *spiffebundle.Bundle) {
	if _, ok := b.SequenceNumber(); !ok {
		b.SetSequenceNumber(uint64(im.now().Unix())) // the latest fetched bundle wins
	}
	changed, err := im.take(b)
	im.mu.Lock()
	im.refused = err
	im.mu.Unlock()
	if err != nil {
		im.log.Warn("external bundle refused", "err", err)
		return
	}
	if changed {
		seq, _ := b.SequenceNumber()
		im.log.Info("external bundle imported", "sequence", seq, "roots", len(b.X509Authorities()))
		im.onUpdate(b)
	}
}

// take stores a fetched bundle. A bundle with the held sequence and the
// same keys (only its refresh hint differs: SPIRE's endpoint overrides the
// hint of the bundle 'spire-server bundle show' prints) is no change.
func (im *importer) take(b *spiffebundle.Bundle) (bool, error) {
	changed, err := im.set.Update(b)
	if errors.Is(err, trust.ErrSequenceRegression) {
		if held, herr := im.set.GetBundleForTrustDomain(b.TrustDomain()); herr == nil && trust.SameKeys(held, b) {
			changed, err = false, nil
		}
	}
	if err == nil && im.auth != nil {
		// Self-serving: the latest fetched bundle authenticates the next
		// fetch, whatever the bootstrap bundle's sequence was.
		im.auth.Replace(b)
	}
	return changed, err
}

func (im *importer) OnError(err error) {
	im.mu.Lock()
	im.fetchErr, im.failed = err, true
	im.mu.Unlock()
	im.log.Warn("external bundle fetch failed; retrying at the next refresh", "err", err)
}

func (im *importer) status() *hubpb.ExternalTrustDomain {
	im.mu.Lock()
	defer im.mu.Unlock()
	st := &hubpb.ExternalTrustDomain{TrustDomain: im.ext.TrustDomain.Name(), Url: im.ext.URL}
	if b, err := im.set.GetBundleForTrustDomain(im.ext.TrustDomain); err == nil {
		st.BundleSequence, _ = b.SequenceNumber()
		st.Roots = uint32(len(b.X509Authorities()))
	}
	st.LastRefresh, st.NextRefresh = unixOrZero(im.last), unixOrZero(im.next)
	if err := cmp.Or(im.fetchErr, im.refused); err != nil {
		st.Error = err.Error()
	}
	return st
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func infoBody(info *registry.ClusterInfo) *registrypb.Record_Info {
	return &registrypb.Record_Info{Info: info}
}
