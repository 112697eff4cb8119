package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/trust"
)

// DefaultBundleRefresh is how often the SVID mode asks for the federated
// roots: a new cluster's workloads are trusted within it.
const DefaultBundleRefresh = 30 * time.Second

// RunSVID is the agent's mode for a proxyless gRPC application, as
// Istio's agent serves proxyless gRPC: no sidecar and no registration,
// only the application's credential files in SVIDDir (see SVIDFiles),
// kept current until ctx is done. The SVID comes from the token or the
// state directory, as in Run, and is renewed at half its lifetime; the
// roots of every federated trust domain are fetched every BundleRefresh.
// Every file is renamed into place, so the application's file watcher
// reads whole files. Ready, if set, is called once all files are written.
func (a *Agent) RunSVID(ctx context.Context) error {
	if a.cfg.SVIDDir == "" {
		return fmt.Errorf("agent: the SVID mode needs a directory for the SVID files")
	}
	b, err := LoadBootstrap(a.cfg.ConfigDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.cfg.SVIDDir, 0o755); err != nil {
		return fmt.Errorf("agent: SVID directory: %w", err)
	}
	files := SVIDFiles{Dir: a.cfg.SVIDDir}
	if err := files.WriteControlPlaneCA(rootsOf(b.Roots, b.ControlPlaneID.TrustDomain())); err != nil {
		return fmt.Errorf("%w (is %s from 'federate vm configure'?)", err, filepath.Join(b.Dir, RootCertFile))
	}
	cred, err := a.credential(ctx, b)
	if err != nil {
		return err
	}
	if err := files.WriteSVID(cred); err != nil {
		return err
	}
	cp := newControlPlane(b, cred)
	defer cp.close()
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.writeBundle(fctx, cp, files)
	cancel()
	if err != nil {
		return err
	}
	renewer := &trust.Renewer{
		Credential: cred, Logger: a.log,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			resp, err := agentpb.NewWorkloadsClient(cp.conn).Renew(ctx, &agentpb.RenewRequest{Csr: csr})
			if err != nil {
				return nil, err
			}
			return trust.ParseCertificates(resp.GetCertificates())
		},
		OnRenew: func(c *trust.Credential) {
			a.saver.save(c)
			if err := files.WriteSVID(c); err != nil {
				a.log.Error("write the renewed SVID for the application", "err", err)
				return
			}
			a.log.Info("SVID renewed", "id", c.ID(), "expires", c.Expiry(), "file", filepath.Join(files.Dir, SVIDPEMFile))
		},
	}
	a.log.Info("SVID files ready", "id", cred.ID(), "expires", cred.Expiry(), "dir", files.Dir)
	if a.cfg.Ready != nil {
		a.cfg.Ready()
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return renewer.Run(ctx) })
	g.Go(func() error { a.saver.run(ctx); return nil })
	g.Go(func() error { a.refreshBundles(ctx, cp, files); return nil })
	return g.Wait()
}

// refreshBundles rewrites the bundle file every BundleRefresh; a failed
// fetch keeps the last file.
func (a *Agent) refreshBundles(ctx context.Context, cp *controlPlane, files SVIDFiles) {
	every := a.cfg.BundleRefresh
	if every <= 0 {
		every = DefaultBundleRefresh
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fctx, cancel := context.WithTimeout(ctx, every)
		err := a.writeBundle(fctx, cp, files)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("fetch the federated roots; keeping the last ones", "err", err)
		}
	}
}

// writeBundle fetches the federated roots and writes them.
func (a *Agent) writeBundle(ctx context.Context, cp *controlPlane, files SVIDFiles) error {
	resp, err := agentpb.NewWorkloadsClient(cp.conn).Bundles(ctx, &agentpb.BundlesRequest{})
	if err != nil {
		return cp.explain("fetch the federated roots", err)
	}
	var roots []*x509.Certificate
	for _, tb := range resp.GetBundles() {
		certs, err := trust.ParseCertificates(tb.GetRoots())
		if err != nil {
			return fmt.Errorf("agent: roots of %s: %w", tb.GetTrustDomain(), err)
		}
		roots = append(roots, certs...)
	}
	return files.WriteBundle(roots)
}
