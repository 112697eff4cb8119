package membership

import (
	"context"
	"errors"
	"time"

	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// MaxMessageBytes bounds one gRPC message in either direction.
const MaxMessageBytes = 64 << 20

// maxBatchRecords bounds the records in one streamed message.
const maxBatchRecords = 2000

// CallTimeout bounds one unary call to the hub or a peer.
const CallTimeout = 10 * time.Second

// AnswerTimeout bounds the wait for a server to complete the TLS handshake
// of a one-shot call (the CLI's, a join): a live one answers in
// milliseconds.
const AnswerTimeout = 5 * time.Second

// ErrNoAnswer means a server did not complete the TLS handshake within
// AnswerTimeout: it is stopped or overloaded, or the address reaches
// something that is not it.
var ErrNoAnswer = errors.New("membership: the server does not answer")

// AwaitAnswer connects conn and waits, at most AnswerTimeout, until the
// server completed the handshake. A connection that fails for a reason
// (refused, a certificate) returns nil: the call that follows reports the
// reason. Without it a frozen server holds a call for gRPC's 20 s connect
// timeout and ends in "authentication handshake failed".
func AwaitAnswer(ctx context.Context, conn *grpc.ClientConn) error {
	wait, cancel := context.WithTimeout(ctx, AnswerTimeout)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready, connectivity.TransientFailure, connectivity.Shutdown:
			return nil
		}
		if !conn.WaitForStateChange(wait, st) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return ErrNoAnswer
		}
	}
}

// StopGrace bounds a graceful gRPC stop before open streams are cut.
const StopGrace = 5 * time.Second

// ServerKeepalive pings idle clients, so that dead peers are noticed.
func ServerKeepalive() grpc.ServerOption {
	return grpc.KeepaliveParams(ServerKeepaliveParameters())
}

// ServerKeepaliveParameters are ServerKeepalive's, for a server that adds
// its own limits to them.
func ServerKeepaliveParameters() keepalive.ServerParameters {
	return keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
}

// ServerKeepalivePolicy accepts the pings ClientKeepalive sends.
func ServerKeepalivePolicy() grpc.ServerOption {
	return grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true})
}

// ClientKeepalive pings the server, so that a dead connection is noticed.
func ClientKeepalive() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 15 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true})
}

// GracefulStop lets in-flight calls finish, then cuts what remains.
func GracefulStop(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(StopGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// SendBatches sends records in bounded messages; last is set on the final
// one, which is sent even when there are no records.
func SendBatches(recs []*registrypb.SignedRecord, send func(batch []*registrypb.SignedRecord, last bool) error) error {
	for {
		n := 0
		size := 0
		for n < len(recs) && n < maxBatchRecords && size < MaxMessageBytes/4 {
			size += proto.Size(recs[n])
			n++
		}
		last := n == len(recs)
		if err := send(recs[:n], last); err != nil {
			return err
		}
		recs = recs[n:]
		if last {
			return nil
		}
	}
}
