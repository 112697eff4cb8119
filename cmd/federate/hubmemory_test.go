package main

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// preEncoded is a message already in its wire form: eight callers share
// one 60 MB encoding instead of marshalling eight copies.
type preEncoded []byte

type preEncodedCodec struct{}

func (preEncodedCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(preEncoded)
	if !ok {
		return nil, errors.New("preEncodedCodec sends only preEncoded messages")
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (preEncodedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (preEncodedCodec) Name() string { return "proto" }

// Eight concurrent 60 MB Joins without a client certificate are refused
// before the hub reads them: the hub's peak resident memory grows by a few
// MiB, not by the 480 MB sent (before the admission limits, by over 1 GB).
// A real join works right after.
func TestHubBoundsUnauthenticatedJoins(t *testing.T) {
	t.Parallel()
	const callers, size = 8, 60 << 20
	const maxGrowthKiB = 48 << 10
	h := startHubProcess(t)
	ctx := fedtest.DeadlineContext(t, 90*time.Second)
	rssBefore, peakBefore := h.memoryKiB(t, "VmRSS"), h.memoryKiB(t, "VmHWM")
	join, err := proto.Marshal(&hubpb.JoinRequest{Token: "fedjoin1.not.atoken", Csr: make([]byte, size)})
	if err != nil {
		t.Fatal(err)
	}

	errs, took := callWithoutCertificate(ctx, t, h.Addr, hubpb.Hub_Join_FullMethodName, join, callers, func() any { return new(hubpb.JoinResponse) })
	rssAfter, peakAfter := h.memoryKiB(t, "VmRSS"), h.memoryKiB(t, "VmHWM")
	t.Logf("%d concurrent %d MiB Joins refused in %s; hub VmRSS %d MiB before, %d MiB after; peak (VmHWM) %d MiB before, %d MiB after",
		callers, size>>20, took.Round(time.Millisecond), rssBefore>>10, rssAfter>>10, peakBefore>>10, peakAfter>>10)
	for i, err := range errs {
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("join %d of %d MiB: %v, want ResourceExhausted (larger than max)", i, size>>20, err)
		}
	}
	if growth := peakAfter - rssBefore; growth > maxGrowthKiB {
		t.Errorf("the hub's peak memory grew by %d MiB, want under %d MiB", growth>>10, maxGrowthKiB>>10)
	}

	// The limits let a real join through.
	token, err := h.federate(ctx, "token", "create", "--cluster", "east")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := membership.Join(ctx, strings.Fields(token)[0]); err != nil {
		t.Fatalf("a real join after the flood: %v", err)
	}
}

// callWithoutCertificate makes callers concurrent calls of method with the
// encoded request req, each on its own TLS connection without a client
// certificate, as an attacker would; it returns each call's error and how
// long they all took.
func callWithoutCertificate(ctx context.Context, t *testing.T, addr, method string, req []byte, callers int, reply func() any) ([]error, time.Duration) {
	t.Helper()
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range callers {
		wg.Go(func() {
			conn := fedtest.DialWith(t, addr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))
			errs[i] = conn.Invoke(ctx, method, preEncoded(req), reply(), grpc.ForceCodecV2(preEncodedCodec{}))
		})
	}
	wg.Wait()
	return errs, time.Since(start)
}
