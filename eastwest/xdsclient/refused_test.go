package xdsclient

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/controlplane/xds"
)

// A control plane that refuses the gateway's credential is asked again
// every 30 s, not at the quick backoff of one that restarts, and the
// gateway says so once, with what to check.
func TestClientSaysOnceThatTheControlPlaneRefusesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var streams atomic.Int32
	g := grpc.NewServer(grpc.StreamInterceptor(func(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
		streams.Add(1)
		return status.Error(codes.PermissionDenied, "xds: the caller is not a gateway of this cluster")
	}))
	xds.NewServer(ctx, nil).Register(g)
	go g.Serve(lis)
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	logs := &lines{}
	client := NewClient(ClientConfig{Conn: conn, NodeID: "gw-1", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	time.Sleep(3 * time.Second)
	cancel()
	<-done
	if n := streams.Load(); n != 1 {
		t.Errorf("the client opened %d streams in 3 s against a control plane that refuses it, want 1", n)
	}
	if n := logs.count("the control plane refuses this gateway's credential"); n != 1 {
		t.Errorf("the client said %d times that the control plane refuses it, want once; log:\n%s", n, logs)
	}
}

// lines is a log that counts lines holding a text.
type lines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lines) count(text string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), text)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
