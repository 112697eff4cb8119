// Package proxyless is the proxyless gRPC application of
// docs/proxyless-grpc.md: a caller built only from the page's recipe (the
// bootstrap in GRPC_XDS_BOOTSTRAP, xDS credentials, xds:/// targets) and
// a server that serves mTLS with the SVID files 'federate-agent svid'
// keeps. The tests and the lab run them as separate processes, since
// grpc-go reads its environment once, when it starts.
package proxyless

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and its balancers
)

// Dial is the recipe's channel: the target's configuration over xDS from
// the control plane in GRPC_XDS_BOOTSTRAP, and mTLS as the control plane's
// clusters say (the SVID, the roots, the SPIFFE IDs to accept). The
// fallback credentials apply only to a cluster without TLS settings,
// which the federation's control plane never sends.
func Dial(target string) (*grpc.ClientConn, error) {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, fmt.Errorf("proxyless: xDS credentials: %w", err)
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("proxyless: dial xds:///%s (is GRPC_XDS_BOOTSTRAP set?): %w", target, err)
	}
	return conn, nil
}

// Result is one RPC, as the caller reports it (one JSON object a line).
type Result struct {
	Target string    `json:"target"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	// Server is the SPIFFE ID the server presented, Addr where the RPC
	// went (a backend, or a remote cluster's gateway).
	Server string `json:"server,omitempty"`
	Addr   string `json:"addr,omitempty"`
	Err    string `json:"err,omitempty"`
}

// Caller calls the gRPC health service of each target, every Interval,
// and reports every RPC. Targets are called side by side, so a slow one
// does not slow the others.
type Caller struct {
	Targets []string
	// Interval is the pause between calls to a target; Timeout bounds an
	// RPC, which waits for a ready connection meanwhile.
	Interval, Timeout time.Duration
	// Out receives the results as JSON lines.
	Out io.Writer
}

// Run calls until ctx is done.
func (c *Caller) Run(ctx context.Context) error {
	clients := make([]healthpb.HealthClient, len(c.Targets))
	for i, target := range c.Targets {
		conn, err := Dial(target)
		if err != nil {
			return err
		}
		defer conn.Close()
		clients[i] = healthpb.NewHealthClient(conn)
	}
	var (
		mu        sync.Mutex // serializes writes to Out
		reportErr error
	)
	enc := json.NewEncoder(c.Out)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, client := range clients {
		wg.Go(func() {
			tick := time.NewTicker(c.Interval)
			defer tick.Stop()
			for {
				r := call(ctx, client, c.Targets[i], c.Timeout)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				err := enc.Encode(r)
				if err != nil && reportErr == nil {
					reportErr = fmt.Errorf("proxyless: report: %w", err)
				}
				mu.Unlock()
				if err != nil {
					cancel()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	wg.Wait()
	return reportErr
}

func call(ctx context.Context, client healthpb.HealthClient, target string, timeout time.Duration) Result {
	r := Result{Target: target, Start: time.Now()}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var p peer.Peer
	_, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p))
	r.End = time.Now()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	if p.Addr != nil {
		r.Addr = p.Addr.String()
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && info.SPIFFEID != nil {
		r.Server = info.SPIFFEID.String()
	}
	return r
}
