package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Reply is what a coffee-shop app answers: who served the request.
type Reply struct {
	Service  string `json:"service"`
	Cluster  string `json:"cluster"`
	Instance string `json:"instance"`
}

// ServeApp runs one coffee-shop app on listen until ctx ends: an HTTP
// server that answers every request with its Reply, so that a caller sees
// which cluster and instance served it.
func ServeApp(ctx context.Context, listen string, r Reply) error {
	body, _ := json.Marshal(r)
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("lab app %s: %w", r.Instance, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(append(body, '\n'))
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Call asks service through from's sidecar (plain HTTP to its outbound
// listener; the sidecar originates mTLS) and returns who answered. Every
// call opens a new connection, so it picks its endpoint again, as a new
// request from an application would.
func (st *State) Call(ctx context.Context, from WorkloadState, service string) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+from.Outbound[service]+"/", nil)
	if err != nil {
		return Reply{}, err
	}
	req.Host = service + ".shop.svc.cluster.local"
	resp, err := st.httpClient(from.Cluster).Do(req)
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return Reply{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("%s: %s: %s", service, resp.Status, strings.TrimSpace(string(data)))
	}
	var r Reply
	if err := json.Unmarshal(data, &r); err != nil || r.Service != service {
		return Reply{}, fmt.Errorf("%s: unexpected answer %q", service, strings.TrimSpace(string(data)))
	}
	return r, nil
}
