package connguard

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// A handler may return well after its client cancelled the stream: gRPC
// starts its idle clock when it drops the stream, the guard hears of the
// end when the handler returns. The close that follows is still counted
// as idle.
func TestIdleCountedWhenTheHandlerReturnsLate(t *testing.T) {
	const idle, linger = 500 * time.Millisecond, 300 * time.Millisecond
	g := New(Config{IdleTimeout: idle, UnauthenticatedTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	returned := make(chan struct{}, 1)
	desc := grpc.StreamDesc{StreamName: "Hold", ClientStreams: true, ServerStreams: true,
		Handler: func(_ any, s grpc.ServerStream) error {
			<-s.Context().Done()
			time.Sleep(linger)
			returned <- struct{}{}
			return nil
		}}
	srv := grpc.NewServer(g.ServerOptions(insecure.NewCredentials())...)
	srv.RegisterService(&grpc.ServiceDesc{ServiceName: "test.Held", HandlerType: (*any)(nil), Streams: []grpc.StreamDesc{desc}}, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := conn.NewStream(ctx, &desc, "/test.Held/Hold")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(&emptypb.Empty{}); err != nil {
			t.Fatal(err)
		}
		// The server has the stream once the guard counts it.
		for deadline := time.Now().Add(5 * time.Second); g.streams() != 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("stream %d: the guard counts %d streams, want 1", i, g.streams())
			}
		}
		cancel()
		<-returned
		for deadline := time.Now().Add(idle + 10*time.Second); g.Closed(ReasonIdle) != float64(i+1); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("stream %d: %v connections closed as idle, want %d", i, g.Closed(ReasonIdle), i+1)
			}
		}
	}
}

// streams is the number of open streams over all connections.
func (g *Guard) streams() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.live {
		c.mu.Lock()
		n += c.streams
		c.mu.Unlock()
	}
	return n
}
