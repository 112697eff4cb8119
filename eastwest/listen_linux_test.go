package eastwest

import (
	"context"
	"crypto/tls"
	"testing"
	"time"
)

// A listener from Listen hands a connection to the gateway only once it
// has sent something: a silent client costs nothing, one that closes is
// still counted as no_data, and hellos are relayed as ever.
func TestListenDefersAcceptUntilData(t *testing.T) {
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	g, err := New(Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	lis, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	addr := lis.Addr().String()

	silent := dialTCP(t, addr) // connected, from the client's side
	c, err := dialTLS(t, addr, reviewsSNI, &tls.Config{RootCAs: b.roots}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
		t.Fatalf("reply %q, want %q", got, want)
	}
	c.Close()
	// The accept queue is first in, first out: had the silent connection
	// been handed over, it would have been accepted first.
	if st := g.Stats(); st.Accepted != 1 {
		t.Fatalf("accepted %d connections, want 1: the silent one was handed over", st.Accepted)
	}
	silent.CloseWrite()
	expectClosed(t, silent)
	eventually(t, "the silent connection counted as no_data", func() bool {
		st := g.Stats()
		return st.Accepted == 2 && st.Refused[RefusedNoData] == 1 && st.Active == 0
	})
}
