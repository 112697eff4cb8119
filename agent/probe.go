package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	networkingpb "istio.io/api/networking/v1alpha3"
)

// Probe defaults, as in Istio's ReadinessProbe and Kubernetes.
const (
	defaultProbePeriod    = 10 * time.Second
	defaultProbeTimeout   = time.Second
	defaultProbeFailures  = 3
	defaultProbeSuccesses = 1
)

// Prober runs a WorkloadGroup's readiness probe against the local
// application and reports each change of its result.
type Prober struct {
	probe *networkingpb.ReadinessProbe
	// Host is where httpGet and tcpSocket probes connect when the probe
	// names no host (default 127.0.0.1).
	Host string
}

// NewProber returns a Prober for p.
func NewProber(p *networkingpb.ReadinessProbe) *Prober {
	return &Prober{probe: p, Host: "127.0.0.1"}
}

// Run probes until ctx is done. The workload starts unhealthy; report runs
// on Run's goroutine after the first result and after every change, once
// the success or failure threshold is reached.
func (p *Prober) Run(ctx context.Context, report func(healthy bool, message string)) error {
	pr := p.probe
	period := seconds(pr.GetPeriodSeconds(), defaultProbePeriod)
	timeout := seconds(pr.GetTimeoutSeconds(), defaultProbeTimeout)
	failures := int(max(pr.GetFailureThreshold(), 0))
	if failures == 0 {
		failures = defaultProbeFailures
	}
	successes := int(max(pr.GetSuccessThreshold(), 0))
	if successes == 0 {
		successes = defaultProbeSuccesses
	}
	delay := time.Duration(pr.GetInitialDelaySeconds()) * time.Second
	t := time.NewTimer(delay)
	defer t.Stop()
	healthy, reported := false, false
	okRun, failRun := 0, 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := p.check(ctx, timeout)
		if err == nil {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		switch {
		case !healthy && okRun >= successes:
			healthy, reported = true, true
			report(true, "")
		case (healthy || !reported) && err != nil && (failRun >= failures || !reported):
			// Before the first success a failure is reported at once: the
			// workload has not been ready yet.
			healthy, reported = false, true
			report(false, err.Error())
		}
		t.Reset(period)
	}
}

func seconds(s int32, def time.Duration) time.Duration {
	if s <= 0 {
		return def
	}
	return time.Duration(s) * time.Second
}

// check runs the probe once.
func (p *Prober) check(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pr := p.probe
	switch {
	case pr.GetHttpGet() != nil:
		return p.checkHTTP(ctx, pr.GetHttpGet())
	case pr.GetTcpSocket() != nil:
		host := pr.GetTcpSocket().GetHost()
		if host == "" {
			host = p.Host
		}
		addr := net.JoinHostPort(host, strconv.Itoa(int(pr.GetTcpSocket().GetPort())))
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcpSocket %s: %w", addr, err)
		}
		return c.Close()
	case pr.GetExec() != nil:
		cmd := pr.GetExec().GetCommand()
		out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			if len(out) > 200 {
				out = out[:200]
			}
			return fmt.Errorf("exec %v: %v: %s", cmd, err, out)
		}
		return nil
	}
	return fmt.Errorf("the probe has no check")
}

func (p *Prober) checkHTTP(ctx context.Context, h *networkingpb.HTTPHealthCheckConfig) error {
	scheme := "http"
	if h.GetScheme() == "HTTPS" || h.GetScheme() == "https" {
		scheme = "https"
	}
	host := h.GetHost()
	if host == "" {
		host = p.Host
	}
	path := h.GetPath()
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(h.GetPort()))) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("httpGet %s: %w", url, err)
	}
	for _, hd := range h.GetHttpHeaders() {
		if hd.GetName() == "Host" || hd.GetName() == "host" {
			req.Host = hd.GetValue()
			continue
		}
		req.Header.Add(hd.GetName(), hd.GetValue())
	}
	// Like the kubelet, an HTTPS probe does not verify the certificate.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as Kubernetes probes
		DisableKeepAlives: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("httpGet %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("httpGet %s: status %d", url, resp.StatusCode)
	}
	return nil
}
